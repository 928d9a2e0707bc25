//! `mdlctl limit RATE|off [--job ID]`: set or clear a bandwidth limit.

use anyhow::Result;

use super::Ctx;
use crate::cli::LimitArgs;
use crate::output::{emit, emit_json, format_rate};

/// Run `limit`.
pub async fn run(ctx: &Ctx, args: LimitArgs) -> Result<()> {
    let info = ctx
        .connect()
        .await?
        .set_bandwidth_limit(args.job, args.rate.0)
        .await?;
    if ctx.json {
        return emit_json(&info);
    }
    let scope = args
        .job
        .map_or_else(|| "global".to_string(), |id| format!("job {id}"));
    match args.rate.0 {
        Some(bytes) => emit(format_args!(
            "{scope} bandwidth limit set to {} ({bytes} bytes/s)",
            format_rate(bytes)
        )),
        None => emit(format_args!("{scope} bandwidth limit removed")),
    }
}
