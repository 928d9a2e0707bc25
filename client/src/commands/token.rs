//! `mdlctl token set|clear|ls`: the per-hub tokens mdld keeps (the dashboard's settings show
//! the same store). `set` reads the token from stdin, so it never appears in the shell history
//! or the process list.

use std::io::Read;

use anyhow::{Context, Result};
use mdl_protocol::{ErrorKind, HubTokenInfo, Secret};

use super::Ctx;
use crate::cli::TokenCommand;
use crate::exit::Failure;
use crate::output::{emit, emit_json};

/// Run `token ...`.
pub async fn run(ctx: &Ctx, command: TokenCommand) -> Result<()> {
    let mut client = ctx.connect().await?;
    let list = match command {
        TokenCommand::Set { hub } => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the token from stdin")?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(Failure::new(ErrorKind::InvalidRequest, "no token on stdin")
                    .with_hint(format!("pipe it in: `mdlctl token set {hub} < token.txt`"))
                    .into());
            }
            client.set_hub_token(&hub, Some(Secret(token))).await?
        }
        TokenCommand::Clear { hub } => client.set_hub_token(&hub, None).await?,
        TokenCommand::Ls => client.hub_tokens().await?,
    };
    if ctx.json {
        emit_json(&list)
    } else {
        emit(table(&list).trim_end())
    }
}

fn table(list: &[HubTokenInfo]) -> String {
    list.iter()
        .map(|t| {
            let state = if t.set { "set" } else { "not set" };
            format!("{:<8} {state}\n", t.hub)
        })
        .collect()
}
