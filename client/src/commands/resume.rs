//! `mdlctl resume ID|--all`: let held jobs run again.

use anyhow::Result;

use super::{report_target, Ctx};
use crate::cli::TargetArgs;

/// Run `resume`.
pub async fn run(ctx: &Ctx, args: TargetArgs) -> Result<()> {
    let target = args.target();
    let mut client = ctx.connect().await?;
    client.resume(target).await?;
    report_target(ctx, &mut client, target, "resumed").await
}
