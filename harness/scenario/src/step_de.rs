//! `Deserialize` for [`Step`]: a map with exactly one key, the operation's name, whose value is
//! that operation's fields. Errors keep serde's path and location (the value is read with the
//! same deserializer), unknown operations list the known ones.

use crate::model::*;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;

macro_rules! operations {
    ($( $name:literal => $variant:ident($ty:ty), )*) => {
        /// Every operation name, as written in files.
        pub const OPERATIONS: &[&str] = &[$($name),*];

        fn read_step<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Step, A::Error> {
            match key {
                $( $name => Ok(Step::$variant(map.next_value::<$ty>()?)), )*
                other => Err(de::Error::unknown_variant(other, OPERATIONS)),
            }
        }
    };
}

operations! {
    "model" => Model(ModelStep),
    "manifestEntry" => ManifestEntry(ManifestEntryStep),
    "modelFile" => ModelFile(ModelFileStep),
    "startDaemon" => StartDaemon(StartDaemonStep),
    "stopDaemon" => StopDaemon(StopDaemonStep),
    "freezeDaemon" => FreezeDaemon(FreezeDaemonStep),
    "spark" => Spark(SparkStep),
    "http" => Http(HttpStep),
    "metric" => Metric(MetricStep),
    "ipcFrame" => IpcFrame(IpcFrameStep),
    "exec" => Exec(ExecStep),
    "faultUnderLoad" => FaultUnderLoad(FaultUnderLoadStep),
    "kubectl" => Kubectl(KubectlStep),
    "apply" => Apply(ApplyStep),
    "delete" => Delete(DeleteStep),
    "patch" => Patch(PatchStep),
    "get" => Get(GetStep),
    "promql" => Promql(PromqlStep),
    "traffic" => Traffic(TrafficStep),
    "rollout" => Rollout(RolloutStep),
    "wait" => Wait(WaitStep),
    "note" => Note(NoteStep),
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        struct StepVisitor;
        impl<'de> Visitor<'de> for StepVisitor {
            type Value = Step;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one operation written as `- <operation>: {...}`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Step, A::Error> {
                let key: String = map.next_key()?.ok_or_else(|| {
                    de::Error::custom("an empty step: write `- <operation>: {...}`")
                })?;
                let step = read_step(&key, &mut map)?;
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "one operation per step: `{extra}` follows `{key}` (start a new `- ` item)"
                    )));
                }
                Ok(step)
            }
        }
        d.deserialize_map(StepVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_its_name() {
        // op_name and the deserializer agree: a note written with op_name parses back.
        let s: Step = serde_yaml::from_str("note: {text: hi}").unwrap();
        assert_eq!(s.op_name(), "note");
        assert!(OPERATIONS.contains(&s.op_name()));
        assert_eq!(OPERATIONS.len(), 22);
        let err =
            serde_yaml::from_str::<Step>("note: {text: hi}\nexec: {command: [x]}").unwrap_err();
        assert!(err.to_string().contains("one operation per step"), "{err}");
    }
}
