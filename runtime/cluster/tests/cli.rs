//! The commands as `veritas-spark` embeds them (same nesting, a global `--json`): clap's
//! consistency checks and the guide's spellings parse.

use clap::{CommandFactory, Parser, Subcommand};
use veritas_cluster::{BluegreenCommand, CanaryCommand, RollbackArgs, StatusArgs, Target};

#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(subcommand)]
    Canary(CanaryCommand),
    Rollback(RollbackArgs),
    #[command(subcommand)]
    Metrics(Metrics),
    #[command(subcommand)]
    Bluegreen(BluegreenCommand),
    #[command(subcommand)]
    Deployment(Deployment),
}

#[derive(Debug, Subcommand)]
enum Deployment {
    Status(StatusArgs),
}

#[derive(Debug, Subcommand)]
enum Metrics {
    Summary,
    Canary(Target),
    Compare(Target),
}

fn parse(args: &str) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("veritas-spark").chain(args.split_whitespace()))
}

#[test]
fn the_guides_commands_parse() {
    Cli::command().debug_assert();
    for ok in [
        "canary inspect",
        "canary inspect --history",
        "canary inspect --metrics --json",
        "canary inspect -n veritas --name spark",
        "metrics canary",
        "metrics compare --json",
        "rollback --canary",
        "rollback --force",
        "rollback --status --json",
        "rollback --bluegreen",
        "rollback --bluegreen --force",
        "bluegreen inspect",
        "bluegreen inspect --json -n veritas --name veritas-spark",
        "bluegreen diff",
        "bluegreen switch --dry-run",
        "bluegreen switch --to green --wait 30",
        "deployment status",
        "deployment status --verbose",
        "deployment status --json",
    ] {
        parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    let Command::Rollback(r) = parse("rollback --canary --wait 5").unwrap().command else {
        panic!()
    };
    assert!(r.canary && !r.force && r.wait == 5);
}

#[test]
fn rollback_needs_to_know_what() {
    assert!(parse("rollback").is_err());
}

#[test]
fn bluegreen_flags_mean_what_the_guide_says() {
    let Command::Rollback(r) = parse("rollback --bluegreen --force").unwrap().command else {
        panic!()
    };
    assert!(r.bluegreen && r.force && !r.canary);
    assert!(
        parse("rollback --canary --bluegreen").is_err(),
        "one kind at a time"
    );
    let Command::Bluegreen(BluegreenCommand::Switch(s)) =
        parse("bluegreen switch --dry-run --to blue")
            .unwrap()
            .command
    else {
        panic!()
    };
    assert!(s.dry_run);
    assert_eq!(s.to, Some(veritas_crds::EnvironmentName::Blue));
    let err = parse("bluegreen switch --to purple")
        .unwrap_err()
        .to_string();
    assert!(err.contains("blue, green"), "{err}");
    let Command::Deployment(Deployment::Status(a)) =
        parse("deployment status --verbose").unwrap().command
    else {
        panic!()
    };
    assert!(a.verbose);
}

#[test]
fn help_teaches_the_switch_and_the_rollback() {
    let mut cmd = Cli::command();
    let help = cmd
        .find_subcommand_mut("bluegreen")
        .unwrap()
        .find_subcommand_mut("switch")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(
        help.contains("--dry-run") && help.contains("E5001"),
        "{help}"
    );
    let help = Cli::command()
        .find_subcommand_mut("rollback")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(
        help.contains("--bluegreen") && help.contains("E5002"),
        "{help}"
    );
}
