//! `mdlctl ls`: every job, as a table or a JSON array.

use anyhow::Result;

use super::Ctx;
use crate::output::{emit, emit_json, jobs_table};

/// Run `ls`.
pub async fn run(ctx: &Ctx) -> Result<()> {
    let jobs = ctx.connect().await?.list().await?;
    if ctx.json {
        emit_json(&jobs)
    } else {
        emit(jobs_table(&jobs).trim_end())
    }
}
