//! `xlb simulate`: the staging check on the real XDP program, offline.

use std::path::{Path, PathBuf};

use xlb_core::config;

use super::change::read_text;
use super::output::{Failure, Output, print_json};

pub(super) fn simulate(
    output: Output,
    file: &Path,
    flows: usize,
    pcap: Option<PathBuf>,
    seed: u64,
) -> Result<(), Failure> {
    let text = read_text(file)?;
    let config = config::parse(&text, &file.display().to_string()).map_err(Failure::bad_input)?;
    let opts = xlb_dataplane::staging::SimulateOptions { flows, seed, pcap };
    let report = xlb_dataplane::staging::simulate(&config, &opts).map_err(|e| {
        if e.is_bad_input() {
            Failure::bad_input(e)
        } else {
            Failure::internal(e)
        }
    })?;
    match output {
        Output::Json => print_json(&report),
        _ => print!("{}", report.render_table()),
    }
    if report.refused() {
        return Err(Failure::refused(
            "the simulated split is beyond the thresholds above (imbalance against the \
             weights, or a backend over its capacity)",
        ));
    }
    Ok(())
}
