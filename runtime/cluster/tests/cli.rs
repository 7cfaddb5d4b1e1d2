//! The commands as `veritas-spark` embeds them (same nesting, a global `--json`): clap's
//! consistency checks and the guide's spellings parse.

use clap::{CommandFactory, Parser, Subcommand};
use veritas_cluster::{CanaryCommand, RollbackArgs, Target};

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
