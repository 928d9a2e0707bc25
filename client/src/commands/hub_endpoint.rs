//! `mdlctl endpoint show|set|reset`: the endpoints mdld uses per hub (the dashboard's settings
//! show the same lists). A list set here wins over the config file's `[sources]` list until
//! the file changes that key; `reset` goes back to the file's.

use anyhow::Result;
use mdl_protocol::HubEndpointsInfo;

use super::Ctx;
use crate::cli::EndpointCommand;
use crate::output::{emit, emit_json};

/// Run `endpoint ...`.
pub async fn run(ctx: &Ctx, command: EndpointCommand) -> Result<()> {
    let mut client = ctx.connect().await?;
    let list = match command {
        EndpointCommand::Show => client.hub_endpoints().await?,
        EndpointCommand::Set { hub, urls } => client.set_hub_endpoints(&hub, Some(urls)).await?,
        EndpointCommand::Reset { hub } => client.set_hub_endpoints(&hub, None).await?,
    };
    if ctx.json {
        emit_json(&list)
    } else {
        emit(table(&list).trim_end())
    }
}

/// One line per hub: its endpoints in order, then where they come from.
fn table(list: &[HubEndpointsInfo]) -> String {
    list.iter()
        .map(|hub| {
            let mut tried: Vec<&str> = Vec::new();
            if let Some(env) = &hub.environment {
                tried.push(env);
            }
            tried.extend(hub.endpoints.iter().map(String::as_str));
            let official = !tried.contains(&hub.official.as_str());
            let origin = match hub.origin.as_str() {
                "runtime" => "set with mdlctl endpoint / the dashboard",
                "config" => "from the config file",
                _ => "default",
            };
            let mut line = format!("{:<8} {}", hub.hub, tried.join(", "));
            if official {
                line.push_str(&format!(", then {}", hub.official));
            }
            line.push_str(&format!("  ({origin}"));
            if hub.environment.is_some() {
                line.push_str("; the first from mdld's environment");
            }
            line.push_str(")\n");
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_what_is_tried_in_order_and_why() {
        let list = vec![
            HubEndpointsInfo {
                hub: "hf".into(),
                endpoints: vec!["https://hf-mirror.com".into()],
                official: "https://huggingface.co".into(),
                origin: "runtime".into(),
                environment: None,
            },
            HubEndpointsInfo {
                hub: "ms".into(),
                endpoints: vec!["https://www.modelscope.cn".into()],
                official: "https://www.modelscope.cn".into(),
                origin: "default".into(),
                environment: None,
            },
        ];
        let text = table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "hf       https://hf-mirror.com, then https://huggingface.co  (set with mdlctl endpoint / the dashboard)"
        );
        assert_eq!(lines[1], "ms       https://www.modelscope.cn  (default)");
    }
}
