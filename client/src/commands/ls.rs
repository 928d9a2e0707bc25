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
        .list_pages(|page| write_jobs(&mut out, &page, &mut first))
        .await?
        .context("writing to stdout")?;
    out.write_all(if first { b"[]\n" } else { b"]\n" })
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

/// Write `jobs` as the next elements of a JSON array (`[` before the first one ever, a comma
/// before the others). An I/O error stays an `io::Error` (a closed pipe is recognised as one).
fn write_jobs(
    out: &mut impl std::io::Write,
    jobs: &[mdl_protocol::JobInfo],
    first: &mut bool,
) -> std::io::Result<()> {
    for job in jobs {
        out.write_all(if *first { b"[" } else { b"," })?;
        *first = false;
        serde_json::to_writer(&mut *out, job).map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stdout whose reader has gone (`mdlctl --json ls | head`).
    struct ClosedPipe;

    impl std::io::Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn pages_join_into_one_array_and_a_closed_pipe_stays_a_broken_pipe() {
        let job = |id| crate::output::tests::job(id, mdl_protocol::JobState::Queued);
        let (mut out, mut first) = (Vec::new(), true);
        write_jobs(&mut out, &[job(1), job(2)], &mut first).unwrap();
        write_jobs(&mut out, &[job(3)], &mut first).unwrap();
        out.extend_from_slice(b"]");
        // The bytes `emit_json` gives the whole list.
        let whole = serde_json::to_string(&[job(1), job(2), job(3)]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), whole);

        // Through a buffer as `run` writes: the error surfaces at a write or the flush.
        let mut closed = std::io::BufWriter::with_capacity(8, ClosedPipe);
        let err = write_jobs(&mut closed, &[job(1)], &mut true).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::from(err).context("writing to stdout");
        assert!(crate::exit::is_broken_pipe(&err), "{err:#}");
    }
}
