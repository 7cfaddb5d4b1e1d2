//! Configuration vocabulary: the mode, the layers, and what the worker keeps access to.

use std::fmt;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How strictly [`crate::confine`] treats a layer that cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    /// Every enabled layer must be applied; the first one that cannot be is an
    /// [`crate::SandboxError::Init`] (E3001).
    Required,
    /// Apply what works; report the rest as [`crate::LayerState::Unavailable`].
    BestEffort,
    /// Apply nothing; every layer is reported as [`crate::LayerState::Disabled`].
    Off,
}

impl SandboxMode {
    /// The configuration spelling: `required`, `best-effort`, `off`.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Required => "required",
            SandboxMode::BestEffort => "best-effort",
            SandboxMode::Off => "off",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`SandboxMode`] or [`Layer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected one of: {expected})")]
pub struct ParseError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl FromStr for SandboxMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "required" => Ok(SandboxMode::Required),
            "best-effort" => Ok(SandboxMode::BestEffort),
            "off" => Ok(SandboxMode::Off),
            other => Err(ParseError {
                what: "sandbox mode",
                value: other.to_owned(),
                expected: "required, best-effort, off",
            }),
        }
    }
}

/// One confinement layer. They are applied in the order of [`Layer::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Layer {
    #[serde(rename = "userns")]
    UserNamespace,
    #[serde(rename = "mountns")]
    MountNamespace,
    #[serde(rename = "netns")]
    NetworkNamespace,
    #[serde(rename = "rlimits")]
    Rlimits,
    #[serde(rename = "landlock")]
    Landlock,
    #[serde(rename = "capabilities")]
    Capabilities,
    #[serde(rename = "seccomp")]
    Seccomp,
}

impl Layer {
    /// Every layer, in the order `confine` applies them.
    pub const ALL: [Layer; 7] = [
        Layer::UserNamespace,
        Layer::MountNamespace,
        Layer::NetworkNamespace,
        Layer::Rlimits,
        Layer::Landlock,
        Layer::Capabilities,
        Layer::Seccomp,
    ];

    /// The short name used in configuration, reports and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::UserNamespace => "userns",
            Layer::MountNamespace => "mountns",
            Layer::NetworkNamespace => "netns",
            Layer::Seccomp => "seccomp",
            Layer::Landlock => "landlock",
            Layer::Rlimits => "rlimits",
            Layer::Capabilities => "capabilities",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layer {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Layer::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| ParseError {
                what: "sandbox layer",
                value: s.to_owned(),
                expected: "userns, mountns, netns, seccomp, landlock, rlimits, capabilities",
            })
    }
}

/// The set of layers enabled by configuration. Serialized as a list of layer names.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerSet(u8);

impl LayerSet {
    pub const fn empty() -> Self {
        LayerSet(0)
    }
    pub fn all() -> Self {
        Layer::ALL.into_iter().collect()
    }
    pub fn contains(self, layer: Layer) -> bool {
        self.0 & layer.bit() != 0
    }
    pub fn insert(&mut self, layer: Layer) {
        self.0 |= layer.bit();
    }
    pub fn remove(&mut self, layer: Layer) {
        self.0 &= !layer.bit();
    }
    #[must_use]
    pub fn with(mut self, layer: Layer) -> Self {
        self.insert(layer);
        self
    }
    #[must_use]
    pub fn without(mut self, layer: Layer) -> Self {
        self.remove(layer);
        self
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The enabled layers in application order.
    pub fn iter(self) -> impl Iterator<Item = Layer> {
        Layer::ALL.into_iter().filter(move |l| self.contains(*l))
    }
}

impl Default for LayerSet {
    fn default() -> Self {
        LayerSet::all()
    }
}

impl FromIterator<Layer> for LayerSet {
    fn from_iter<I: IntoIterator<Item = Layer>>(iter: I) -> Self {
        let mut s = LayerSet::empty();
        for l in iter {
            s.insert(l);
        }
        s
    }
}

impl fmt::Debug for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for LayerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Layer::as_str).collect();
        f.write_str(&names.join(","))
    }
}

/// Comma-separated layer names; `all` and `none` are accepted too.
impl FromStr for LayerSet {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "all" => return Ok(LayerSet::all()),
            "none" | "" => return Ok(LayerSet::empty()),
            _ => {}
        }
        s.split(',').map(str::parse::<Layer>).collect()
    }
}

impl Serialize for LayerSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for LayerSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<Layer>::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// What the worker is confined to. Build it with [`SandboxConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Layers enabled by configuration (all by default).
    pub layers: LayerSet,
    /// The only application subtree readable under Landlock (read-only: files and directory listing).
    pub model_dir: PathBuf,
    /// Extra read-only paths (files or subtrees) for the dynamic loader and the C runtime.
    /// Paths that do not exist are skipped. Defaults to [`SandboxConfig::default_system_read_paths`].
    pub extra_read_paths: Vec<PathBuf>,
    /// RLIMIT_AS ceiling for the worker (virtual address space: the mmapped model, every thread
    /// stack and the heap all count). `None` leaves the inherited limit.
    pub memory_limit_bytes: Option<u64>,
    /// RLIMIT_NOFILE (soft and hard). Descriptors already open above it stay usable.
    pub max_open_files: u64,
    /// The socketpair fd to the daemon: it must stay usable; checked by `confine`.
    pub ipc_fd: RawFd,
}

impl SandboxConfig {
    /// A configuration with every layer enabled, the default system read paths, and
    /// `max_open_files = 64`.
    pub fn new(mode: SandboxMode, model_dir: impl Into<PathBuf>, ipc_fd: RawFd) -> Self {
        SandboxConfig {
            mode,
            layers: LayerSet::all(),
            model_dir: model_dir.into(),
            extra_read_paths: Self::default_system_read_paths(),
            memory_limit_bytes: None,
            max_open_files: 64,
            ipc_fd,
        }
    }

    /// Shared-library directories and the loader cache (for a late `dlopen`), the CPU
    /// topology files glibc and ggml read to count CPUs, and `/proc/meminfo` (the engine's
    /// memory check). Nothing under `/etc` except
    /// `ld.so.cache`, nothing under `/home`, `/root`, `/var`, `/tmp`.
    pub fn default_system_read_paths() -> Vec<PathBuf> {
        [
            "/lib",
            "/lib64",
            "/usr/lib",
            "/usr/lib64",
            "/usr/local/lib",
            "/etc/ld.so.cache",
            "/sys/devices/system/cpu",
            "/proc/cpuinfo",
            "/proc/meminfo",
            "/dev/null",
        ]
        .into_iter()
        .map(PathBuf::from)
        .collect()
    }
}
