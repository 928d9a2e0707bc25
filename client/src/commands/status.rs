//! `mdlctl status ID`: one job and its files, readable or as a JSON object.

use anyhow::Result;

use super::Ctx;
use crate::cli::StatusArgs;
use crate::output::{emit, emit_json, job_detail};

/// Run `status`.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> Result<()> {
    let job = ctx.connect().await?.status(args.id).await?;
    if ctx.json {
        emit_json(&job)
    } else {
        emit(job_detail(&job).trim_end())
    }
}
