//! `mdlctl concurrency N`: how many jobs may run at once.

use anyhow::Result;

use super::Ctx;
use crate::cli::ConcurrencyArgs;
use crate::output::{emit, emit_json};

/// Run `concurrency`.
pub async fn run(ctx: &Ctx, args: ConcurrencyArgs) -> Result<()> {
    let info = ctx.connect().await?.set_concurrency(args.max).await?;
    if ctx.json {
        emit_json(&info)
    } else {
        emit(format_args!(
            "up to {} job(s) run at once",
            info.max_concurrent
        ))
    }
}
