//! `prr explain`: why an instance bans a user or not, and what its server ACL holds; `prr
//! check join|invite|sender`: whether it refuses a user at the door.

use std::io::{IsTerminal, Write};

use serde_json::Value;

use super::Ctx;
use crate::args::{DoorCheck, ExplainFormat};
use crate::{Failure, exit};

pub fn explain(
    ctx: &Ctx,
    instance: &str,
    user: Option<&str>,
    room: Option<&str>,
    acl: bool,
    format: Option<ExplainFormat>,
) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    let v = match (acl, user) {
        (true, _) => prr_replicas::explain_acl(&mut m, instance)?,
        (false, Some(user)) => prr_replicas::explain_user(&mut m, instance, user, room)?,
        (false, None) => {
            return Err(Failure::new(
                exit::USAGE,
                anyhow::anyhow!("explain needs a USER, or --acl"),
            ));
        }
    };
    m.shutdown()?;
    let format = format.unwrap_or(if std::io::stdout().is_terminal() {
        ExplainFormat::Text
    } else {
        ExplainFormat::Json
    });
    let mut out = std::io::stdout().lock();
    match format {
        ExplainFormat::Json => writeln!(out, "{v}")?,
        ExplainFormat::Text if acl => write!(out, "{}", acl_text(&v))?,
        ExplainFormat::Text => write!(out, "{}", user_text(&v))?,
    }
    Ok(exit::OK)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn rule_line(r: &Value) -> String {
    let entity = match r["entity"].as_str() {
        Some(e) => e.to_string(),
        None => format!("sha256:{}", s(&r["sha256"])),
    };
    format!(
        "{} rule {} ({} match) in {} [{} {}], {}, reason: {}",
        s(&r["kind"]),
        entity,
        s(&r["match"]),
        s(&r["room_id"]),
        s(&r["state_key"]),
        s(&r["event_id"]),
        s(&r["recommendation"]),
        r["reason"].as_str().unwrap_or("<none>")
    )
}

fn user_text(v: &Value) -> String {
    let mut t = format!(
        "{} by {}: {}\n",
        s(&v["user_id"]),
        s(&v["instance"]),
        s(&v["verdict"])
    );
    t.push_str("protected rooms:\n");
    for r in v["protected_rooms"].as_array().into_iter().flatten() {
        let membership = r["membership"].as_str().unwrap_or("not a member");
        let ban = match r["ban"]["rule_event_id"].as_str() {
            Some(e) => format!(", ban intended (rule {e})"),
            None => String::new(),
        };
        let outcome = outcome_text(&r["outcome"]);
        t.push_str(&format!(
            "  {}: {membership}{ban}{outcome}\n",
            s(&r["room_id"])
        ));
    }
    t.push_str("matching rules:\n");
    let rules = v["rules"].as_array().cloned().unwrap_or_default();
    if rules.is_empty() {
        t.push_str("  none\n");
    }
    for r in &rules {
        let cited = if r["cited"] == true { " [cited]" } else { "" };
        t.push_str(&format!(
            "  {}{cited}\n    effect: {}\n",
            rule_line(r),
            s(&r["effect"])
        ));
    }
    if let Some(c) = v["cited"].as_object() {
        t.push_str(&format!(
            "the bans cite {} in {}: {}\n",
            s(&c["rule_event_id"]),
            s(&c["rule_room_id"]),
            s(&c["why"])
        ));
    }
    t
}

fn acl_text(v: &Value) -> String {
    let mut t = format!("server ACL of {}\n", s(&v["instance"]));
    if v["exists"] != true {
        t.push_str("  not an instance (no manifest names it)\n");
    }
    t.push_str("denied:\n");
    for d in v["deny"].as_array().into_iter().flatten() {
        t.push_str(&format!("  {}\n", s(&d["entity"])));
        for r in d["rules"].as_array().into_iter().flatten() {
            t.push_str(&format!("    {}\n", rule_line(r)));
        }
    }
    t.push_str("left out:\n");
    for l in v["left_out"].as_array().into_iter().flatten() {
        t.push_str(&format!("  {}: {}\n", rule_line(&l["rule"]), s(&l["why"])));
    }
    t.push_str("rooms:\n");
    for r in v["rooms"].as_array().into_iter().flatten() {
        let state = if r["in_sync"] == true {
            "in sync".to_string()
        } else {
            format!("out of sync: {}", r["differs"])
        };
        let outcome = outcome_text(&r["outcome"]);
        t.push_str(&format!("  {}: {state}{outcome}\n", s(&r["room_id"])));
    }
    t
}

/// `, outcome: done (1 attempt)`, or with the refusal; empty without an outcome.
fn outcome_text(o: &Value) -> String {
    let Some(status) = o["status"].as_str() else {
        return String::new();
    };
    let attempts = o["attempts"].as_u64().unwrap_or(0);
    let plural = if attempts == 1 { "" } else { "s" };
    let error = match o["error"]["errcode"].as_str() {
        Some(code) => format!(", {code}: {}", s(&o["error"]["error"])),
        None => String::new(),
    };
    format!(", outcome: {status} ({attempts} attempt{plural}{error})")
}

/// `prr check join|invite|sender`: one JSON object.
pub fn door(ctx: &Ctx, check: &DoorCheck) -> Result<u8, Failure> {
    let mut m = ctx.open_read()?;
    let index = prr_replicas::DoorIndex::load(&mut m)?;
    m.shutdown()?;
    let answer = match check {
        DoorCheck::Join { user, room } | DoorCheck::Sender { user, room } => {
            index.answer(&[user], room)
        }
        DoorCheck::Invite {
            inviter,
            invitee,
            room,
        } => index.answer(&[invitee, inviter], room),
    };
    writeln!(std::io::stdout().lock(), "{answer}")?;
    Ok(exit::OK)
}
