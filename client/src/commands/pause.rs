//! `mdlctl pause ID|--all`: hold jobs, keeping the bytes fetched so far.

use anyhow::Result;

use super::{report_target, Ctx};
use crate::cli::TargetArgs;

/// Run `pause`.
pub async fn run(ctx: &Ctx, args: TargetArgs) -> Result<()> {
    let target = args.target();
    let mut client = ctx.connect().await?;
    client.pause(target).await?;
    report_target(ctx, &mut client, target, "paused").await
}
