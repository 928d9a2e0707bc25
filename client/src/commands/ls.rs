//! `mdlctl ls`: every job, as a table or a JSON array.

use std::io::Write as _;

use anyhow::{Context, Result};

use super::Ctx;
use crate::output::{emit, jobs_table};

/// Run `ls`.
pub async fn run(ctx: &Ctx) -> Result<()> {
    let mut client = ctx.connect().await?;
    if !ctx.json {
        let jobs = client.list().await?;
        return emit(jobs_table(&jobs).trim_end());
    }
    // One JSON array on one line, written page by page as the daemon sends them: a listing of
    // 100k jobs is never held whole, and its first jobs are out before the last arrive.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut first = true;
    client
        .list_pages(|page| -> Result<()> {
            for job in &page {
                out.write_all(if first { b"[" } else { b"," })?;
                first = false;
                serde_json::to_writer(&mut out, job)?;
            }
            Ok(())
        })
        .await?
        .context("writing to stdout")?;
    out.write_all(if first { b"[]\n" } else { b"]\n" })
        .and_then(|()| out.flush())
        .context("writing to stdout")
}
