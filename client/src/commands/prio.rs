//! `mdlctl prio ID N`: change a job's priority (higher runs first; N may be negative).

use anyhow::Result;

use super::Ctx;
use crate::cli::PrioArgs;
use crate::output::{emit, emit_json};

/// Run `prio`.
pub async fn run(ctx: &Ctx, args: PrioArgs) -> Result<()> {
    let job = ctx
        .connect()
        .await?
        .set_priority(args.id, args.priority)
        .await?;
    if ctx.json {
        emit_json(&job)
    } else {
        emit(format_args!("job {} priority {}", job.id, job.priority))
    }
}
