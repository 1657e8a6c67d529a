//! `listpays` and `pay`'s results from `listsendpays` records: parts grouped by payment hash
//! and group id, as CLN's `listpays` does. Pure functions over the records.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

fn u64_of(v: &Value, k: &str) -> Option<u64> {
    v.get(k).and_then(|x| crate::params::parse_msat(x).ok())
}

/// The `k` amounts of those `parts` that have one.
fn u64s<'a>(parts: &'a [&'a Value], k: &'a str) -> impl Iterator<Item = u64> + 'a {
    parts.iter().filter_map(move |p| u64_of(p, k))
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The parts of one attempt (payment hash + group id), in creation order.
pub fn groups(sendpays: &[Value]) -> Vec<Vec<&Value>> {
    let mut by: BTreeMap<(String, u64), Vec<&Value>> = BTreeMap::new();
    let mut order: Vec<(u64, (String, u64))> = vec![];
    for p in sendpays {
        let key = (
            str_of(p, "payment_hash").unwrap_or_default().to_string(),
            u64_of(p, "groupid").unwrap_or(0),
        );
        let idx = u64_of(p, "created_index").unwrap_or(0);
        let entry = by.entry(key.clone()).or_default();
        if entry.is_empty() {
            order.push((idx, key));
        }
        entry.push(p);
    }
    order.sort();
    order
        .into_iter()
        .filter_map(|(_, k)| by.remove(&k))
        .collect()
}

/// The status of an attempt: complete if a part completed, else pending if one is in flight,
/// else failed.
pub fn group_status(parts: &[&Value]) -> &'static str {
    let has = |s: &str| parts.iter().any(|p| str_of(p, "status") == Some(s));
    if has("complete") {
        "complete"
    } else if has("pending") {
        "pending"
    } else {
        "failed"
    }
}

/// One `listpays` entry for an attempt, with the fields CLN's schema allows for its status.
pub fn pay_entry(parts: &[&Value]) -> Value {
    let status = group_status(parts);
    let mut m = Map::new();
    let Some(first) = parts.first() else {
        return Value::Object(m);
    };
    let created_index = u64s(parts, "created_index").min().unwrap_or(0);
    m.insert("created_index".into(), json!(created_index));
    if let Some(u) = u64s(parts, "updated_index").max() {
        m.insert("updated_index".into(), json!(u));
    }
    m.insert(
        "payment_hash".into(),
        json!(str_of(first, "payment_hash").unwrap_or_default()),
    );
    m.insert("status".into(), json!(status));
    for k in ["destination", "label", "bolt11", "description"] {
        if let Some(v) = parts.iter().find_map(|p| str_of(p, k)) {
            m.insert(k.into(), json!(v));
        }
    }
    let created_at = u64s(parts, "created_at").min().unwrap_or(0);
    m.insert("created_at".into(), json!(created_at));
    let counted: Vec<&Value> = match status {
        "complete" => parts
            .iter()
            .copied()
            .filter(|p| str_of(p, "status") == Some("complete"))
            .collect(),
        "pending" => parts
            .iter()
            .copied()
            .filter(|p| str_of(p, "status") != Some("failed"))
            .collect(),
        _ => parts.to_vec(),
    };
    let sent: u64 = u64s(&counted, "amount_sent_msat").sum();
    m.insert("amount_sent_msat".into(), json!(sent));
    if status != "failed" {
        let amount: u64 = u64s(&counted, "amount_msat").sum();
        m.insert("amount_msat".into(), json!(amount));
    }
    if status == "complete" {
        if let Some(c) = u64s(&counted, "completed_at").max() {
            m.insert("completed_at".into(), json!(c));
        }
        if let Some(pre) = counted.iter().find_map(|p| str_of(p, "payment_preimage")) {
            m.insert("preimage".into(), json!(pre));
        }
        if counted.len() > 1 {
            m.insert("number_of_parts".into(), json!(counted.len()));
        }
    }
    Value::Object(m)
}

/// `listpays`: one entry per attempt, in creation order, optionally only those with `status`.
pub fn listpays(sendpays: &[Value], status: Option<&str>) -> Value {
    let pays: Vec<Value> = groups(sendpays)
        .iter()
        .map(|g| pay_entry(g))
        .filter(|e| status.is_none_or(|s| e.get("status").and_then(Value::as_str) == Some(s)))
        .collect();
    json!({ "pays": pays })
}

/// `pay`'s result for a completed attempt: CLN's fields from its parts.
pub fn pay_result(parts: &[&Value]) -> Option<Value> {
    let done: Vec<&Value> = parts
        .iter()
        .copied()
        .filter(|p| str_of(p, "status") == Some("complete"))
        .collect();
    let first = done.first()?;
    let preimage = done.iter().find_map(|p| str_of(p, "payment_preimage"))?;
    let mut m = Map::new();
    m.insert("payment_preimage".into(), json!(preimage));
    m.insert(
        "payment_hash".into(),
        json!(str_of(first, "payment_hash").unwrap_or_default()),
    );
    if let Some(d) = str_of(first, "destination") {
        m.insert("destination".into(), json!(d));
    }
    let created_at = u64s(&done, "created_at").min().unwrap_or(0);
    m.insert("created_at".into(), json!(created_at));
    m.insert("parts".into(), json!(done.len()));
    let amount: u64 = u64s(&done, "amount_msat").sum();
    let sent: u64 = u64s(&done, "amount_sent_msat").sum();
    m.insert("amount_msat".into(), json!(amount));
    m.insert("amount_sent_msat".into(), json!(sent));
    if parts.iter().any(|p| str_of(p, "status") == Some("pending")) {
        m.insert(
            "warning_partial_completion".into(),
            json!("Some parts of this payment are still in flight"),
        );
    }
    m.insert("status".into(), json!("complete"));
    Some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(idx: u64, group: u64, partid: u64, status: &str) -> Value {
        let mut v = json!({
            "created_index": idx, "id": idx, "payment_hash": "aa".repeat(32),
            "groupid": group, "partid": partid, "destination": format!("02{}", "bb".repeat(32)),
            "amount_msat": 1000, "amount_sent_msat": 1010, "created_at": 100 + idx,
            "status": status, "bolt11": "lnbcrt1x", "label": "l",
        });
        if status == "complete" {
            v["payment_preimage"] = json!("cc".repeat(32));
            v["completed_at"] = json!(200 + idx);
        }
        v
    }

    #[test]
    fn groups_by_attempt_and_sums_parts() {
        let rows = vec![
            part(1, 1, 1, "failed"),
            part(2, 2, 1, "complete"),
            part(3, 2, 2, "complete"),
            part(4, 2, 3, "failed"),
        ];
        let v = listpays(&rows, None);
        let pays = v["pays"].as_array().expect("pays");
        assert_eq!(pays.len(), 2);
        assert_eq!(pays[0]["status"], json!("failed"));
        assert_eq!(pays[0]["amount_sent_msat"], json!(1010));
        assert!(pays[0].get("amount_msat").is_none());
        assert_eq!(pays[1]["status"], json!("complete"));
        assert_eq!(pays[1]["amount_msat"], json!(2000));
        assert_eq!(pays[1]["amount_sent_msat"], json!(2020));
        assert_eq!(pays[1]["number_of_parts"], json!(2));
        assert_eq!(pays[1]["created_index"], json!(2));
        assert_eq!(pays[1]["updated_index"], Value::Null);
        assert_eq!(pays[1]["completed_at"], json!(203));
        assert_eq!(
            listpays(&rows, Some("complete"))["pays"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        assert_eq!(
            listpays(&rows, Some("pending"))["pays"]
                .as_array()
                .map(Vec::len),
            Some(0)
        );
    }

    #[test]
    fn pay_result_from_completed_parts() {
        let rows = [part(2, 2, 1, "complete"), part(3, 2, 2, "complete")];
        let refs: Vec<&Value> = rows.iter().collect();
        let r = pay_result(&refs).expect("complete");
        assert_eq!(r["parts"], json!(2));
        assert_eq!(r["amount_msat"], json!(2000));
        assert_eq!(r["payment_preimage"], json!("cc".repeat(32)));
        assert_eq!(r["created_at"], json!(102));
        let failed = [part(1, 1, 1, "failed")];
        let refs: Vec<&Value> = failed.iter().collect();
        assert!(pay_result(&refs).is_none());
        let mixed = [part(1, 1, 1, "pending"), part(2, 1, 2, "complete")];
        let refs: Vec<&Value> = mixed.iter().collect();
        assert_eq!(group_status(&refs), "complete");
        assert!(pay_result(&refs).is_some_and(|r| r.get("warning_partial_completion").is_some()));
    }
}
