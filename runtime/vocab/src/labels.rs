//! Kubernetes labels, label values and object names from the guide.

pub const APP: &str = "app";
pub const APP_SPARK: &str = "veritas-spark";
pub const APP_CONTROLLER: &str = "veritas-controller";

pub const DEPLOYMENT: &str = "deployment";
pub const DEPLOYMENT_CANARY: &str = "canary";
pub const DEPLOYMENT_STABLE: &str = "stable";

pub const ENVIRONMENT: &str = "environment";
pub const ENVIRONMENT_BLUE: &str = "blue";
pub const ENVIRONMENT_GREEN: &str = "green";

pub const SERVICE_SPARK: &str = "veritas-spark";
pub const SERVICE_CANARY: &str = "veritas-spark-canary";
/// The blue-green preview Service: selects the standby environment.
pub const SERVICE_PREVIEW: &str = "veritas-spark-preview";
pub const SERVICE_MONITOR_CANARY: &str = "veritas-spark-canary";
pub const CONFIGMAP_BLUE: &str = "veritas-config-blue";
pub const CONFIGMAP_GREEN: &str = "veritas-config-green";

/// Default locations and ports from the guide.
pub const DEFAULT_SOCKET: &str = "/var/run/veritas/veritas-spark.sock";
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_METRICS_PORT: u16 = 9090;
pub const DEFAULT_MODEL_DIR: &str = "/models";

/// The controller's Lease (leader election) and its Deployment/ServiceAccount name.
pub const CONTROLLER_LEASE: &str = "veritas-controller";
/// Namespace of the controller's manifests under `fixtures/manifests/`.
pub const CONTROLLER_NAMESPACE: &str = "veritas-system";
