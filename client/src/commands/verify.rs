//! `mdlctl verify [ID...]` / `mdlctl verify --path PATH`: re-hash finished files; the daemon
//! queues jobs with damaged or missing files again.

use anyhow::Result;

use super::{absolute_path, Ctx};
use crate::cli::VerifyArgs;
use crate::output::{emit, emit_json};

/// Run `verify`.
pub async fn run(ctx: &Ctx, args: VerifyArgs) -> Result<()> {
    let paths = args
        .paths
        .iter()
        .map(|p| absolute_path(p))
        .collect::<Result<Vec<_>>>()?;
    let requeued = ctx.connect().await?.verify(args.ids, paths).await?;
    if ctx.json {
        return emit_json(&requeued);
    }
    if requeued.is_empty() {
        return emit("all checked files are intact");
    }
    for job in &requeued {
        emit(format_args!(
            "job {} queued again (damaged or missing files): {}",
            job.id, job.source
        ))?;
    }
    Ok(())
}
