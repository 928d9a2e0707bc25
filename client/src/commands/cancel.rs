//! `mdlctl cancel ID`: stop a job for good; the daemon removes its partial files.

use anyhow::Result;
use mdl_protocol::Target;

use super::{report_target, Ctx};
use crate::cli::CancelArgs;

/// Run `cancel`.
pub async fn run(ctx: &Ctx, args: CancelArgs) -> Result<()> {
    let mut client = ctx.connect().await?;
    client.cancel(args.id).await?;
    report_target(ctx, &mut client, Target::Job(args.id), "cancelled").await
}
