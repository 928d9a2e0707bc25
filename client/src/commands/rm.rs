//! `mdlctl rm ID...` / `mdlctl rm --finished`: forget finished jobs, optionally deleting the
//! files of completed ones.

use anyhow::Result;
use serde_json::json;

use super::Ctx;
use crate::cli::RmArgs;
use crate::output::{emit, emit_json};

/// Run `rm`.
pub async fn run(ctx: &Ctx, args: RmArgs) -> Result<()> {
    let mut client = ctx.connect().await?;
    let removed = if args.finished {
        // The daemon forgets every finished job for an empty list; list first to report which.
        let finished: Vec<u64> = client
            .list()
            .await?
            .into_iter()
            .filter(|job| job.state.is_finished())
            .map(|job| job.id)
            .collect();
        client.remove(Vec::new(), args.delete_files).await?;
        finished
    } else {
        client.remove(args.ids.clone(), args.delete_files).await?;
        args.ids
    };
    if ctx.json {
        return emit_json(&json!({ "removed": removed, "delete_files": args.delete_files }));
    }
    let ids: Vec<String> = removed.iter().map(u64::to_string).collect();
    match ids.len() {
        0 => emit("no finished jobs to remove"),
        1 => emit(format_args!("removed job {}", ids[0])),
        _ => emit(format_args!("removed jobs {}", ids.join(", "))),
    }
}
