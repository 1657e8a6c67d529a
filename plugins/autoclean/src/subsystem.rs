//! CLN's autoclean subsystems: which list each one reads, which entries belong to it, how
//! old an entry is, and the parameters that delete it. Pure, so it is tested without a node.

use serde_json::{Value, json};

/// What autoclean can delete, as CLN names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsystem {
    SucceededForwards,
    FailedForwards,
    SucceededPays,
    FailedPays,
    PaidInvoices,
    ExpiredInvoices,
    /// CLN's `listnetworkevents` (connections made, lost and failed).
    NetworkEvents,
}

/// The lists autoclean reads; each holds two subsystems (networkevents: one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Forwards,
    Sendpays,
    Invoices,
    NetworkEvents,
}

impl Subsystem {
    /// Every subsystem, in CLN's order.
    pub const ALL: [Subsystem; 7] = [
        Subsystem::SucceededForwards,
        Subsystem::FailedForwards,
        Subsystem::SucceededPays,
        Subsystem::FailedPays,
        Subsystem::PaidInvoices,
        Subsystem::ExpiredInvoices,
        Subsystem::NetworkEvents,
    ];

    /// CLN's name.
    pub fn name(self) -> &'static str {
        match self {
            Subsystem::SucceededForwards => "succeededforwards",
            Subsystem::FailedForwards => "failedforwards",
            Subsystem::SucceededPays => "succeededpays",
            Subsystem::FailedPays => "failedpays",
            Subsystem::PaidInvoices => "paidinvoices",
            Subsystem::ExpiredInvoices => "expiredinvoices",
            Subsystem::NetworkEvents => "networkevents",
        }
    }

    /// The subsystem called `name`.
    pub fn parse(name: &str) -> Option<Subsystem> {
        Subsystem::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Its position in [`Subsystem::ALL`].
    pub fn index(self) -> usize {
        Subsystem::ALL
            .iter()
            .position(|s| *s == self)
            .unwrap_or_default()
    }

    /// The option setting its age (`autoclean-<name>-age`).
    pub fn age_option(self) -> String {
        format!("autoclean-{}-age", self.name())
    }

    /// CLN's default age: 30 days for network events, otherwise 0 (not cleaned).
    pub fn default_age(self) -> u64 {
        match self {
            Subsystem::NetworkEvents => 30 * 24 * 3600,
            _ => 0,
        }
    }

    /// The list it lives in.
    pub fn list(self) -> Option<List> {
        match self {
            Subsystem::SucceededForwards | Subsystem::FailedForwards => Some(List::Forwards),
            Subsystem::SucceededPays | Subsystem::FailedPays => Some(List::Sendpays),
            Subsystem::PaidInvoices | Subsystem::ExpiredInvoices => Some(List::Invoices),
            Subsystem::NetworkEvents => Some(List::NetworkEvents),
        }
    }
}

impl List {
    /// Every list.
    pub const ALL: [List; 4] = [
        List::Forwards,
        List::Sendpays,
        List::Invoices,
        List::NetworkEvents,
    ];

    /// The command that lists it, and the member of its result holding the entries.
    pub fn command(self) -> (&'static str, &'static str) {
        match self {
            List::Forwards => ("listforwards", "forwards"),
            List::Sendpays => ("listsendpays", "payments"),
            List::Invoices => ("listinvoices", "invoices"),
            List::NetworkEvents => ("listnetworkevents", "networkevents"),
        }
    }

    /// The command that deletes one entry.
    pub fn delete_command(self) -> &'static str {
        match self {
            List::Forwards => "delforward",
            List::Sendpays => "delpay",
            List::Invoices => "delinvoice",
            List::NetworkEvents => "delnetworkevent",
        }
    }

    /// Which subsystem `entry` belongs to, and its time (seconds since the epoch) as CLN's
    /// autoclean measures age: forwards by `resolved_time` (settled) or `received_time`
    /// (failed), payments by `created_at`, invoices by `paid_at` or `expires_at`. Entries
    /// still pending (or unpaid and unexpired) belong to none.
    pub fn classify(self, entry: &Value) -> Option<(Subsystem, u64)> {
        let secs = |k: &str| -> Option<u64> {
            let v = entry.get(k)?;
            v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
        };
        if self == List::NetworkEvents {
            return Some((Subsystem::NetworkEvents, secs("timestamp")?));
        }
        let status = entry.get("status").and_then(Value::as_str)?;
        match (self, status) {
            (List::Forwards, "settled") => {
                Some((Subsystem::SucceededForwards, secs("resolved_time")?))
            }
            (List::Forwards, "failed" | "local_failed") => {
                Some((Subsystem::FailedForwards, secs("received_time")?))
            }
            (List::Sendpays, "complete") => Some((Subsystem::SucceededPays, secs("created_at")?)),
            (List::Sendpays, "failed") => Some((Subsystem::FailedPays, secs("created_at")?)),
            (List::Invoices, "paid") => Some((Subsystem::PaidInvoices, secs("paid_at")?)),
            (List::Invoices, "expired") => Some((Subsystem::ExpiredInvoices, secs("expires_at")?)),
            _ => None,
        }
    }

    /// The parameters deleting `entry`.
    pub fn delete_params(self, entry: &Value) -> Value {
        let f = |k: &str| entry.get(k).cloned().unwrap_or(Value::Null);
        match self {
            List::Forwards => json!({
                "in_channel": f("in_channel"),
                "in_htlc_id": f("in_htlc_id"),
                "status": f("status"),
            }),
            List::Sendpays => json!({
                "payment_hash": f("payment_hash"),
                "status": f("status"),
                "groupid": f("groupid"),
                "partid": entry.get("partid").and_then(Value::as_u64).unwrap_or(0),
            }),
            List::Invoices => json!({"label": f("label"), "status": f("status")}),
            List::NetworkEvents => json!({"created_index": f("created_index")}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_options_as_clns() {
        let names: Vec<_> = Subsystem::ALL.iter().map(|s| s.name()).collect();
        let parsed: Vec<_> = names.iter().filter_map(|n| Subsystem::parse(n)).collect();
        assert_eq!(parsed, Subsystem::ALL);
        assert!(
            Subsystem::ALL
                .iter()
                .enumerate()
                .all(|(i, s)| s.index() == i)
        );
        assert_eq!(Subsystem::parse("everything"), None);
        let option = Subsystem::PaidInvoices.age_option();
        assert_eq!(option, "autoclean-paidinvoices-age");
        let ages = Subsystem::ALL.map(Subsystem::default_age);
        assert_eq!(ages, [0, 0, 0, 0, 0, 0, 2_592_000]);
    }

    /// A list, an entry, and what it is: its subsystem and time, or none.
    type Case = (List, &'static str, Option<(Subsystem, u64)>);

    fn cases() -> Vec<Case> {
        use List::{Forwards as F, Invoices as I, Sendpays as P};
        use Subsystem::*;
        vec![
            (
                F,
                r#"{"status":"settled","resolved_time":100.75}"#,
                Some((SucceededForwards, 100)),
            ),
            (
                F,
                r#"{"status":"local_failed","received_time":7.2}"#,
                Some((FailedForwards, 7)),
            ),
            (F, r#"{"status":"offered","received_time":7}"#, None),
            // A settled forward without resolved_time is left alone, as CLN.
            (F, r#"{"status":"settled","received_time":7}"#, None),
            (
                P,
                r#"{"status":"complete","created_at":5}"#,
                Some((SucceededPays, 5)),
            ),
            (P, r#"{"status":"pending","created_at":5}"#, None),
            (
                I,
                r#"{"status":"paid","paid_at":9,"expires_at":20}"#,
                Some((PaidInvoices, 9)),
            ),
            (
                I,
                r#"{"status":"expired","expires_at":20}"#,
                Some((ExpiredInvoices, 20)),
            ),
            (I, r#"{"status":"unpaid","expires_at":20}"#, None),
            (
                List::NetworkEvents,
                r#"{"created_index":3,"type":"connect","timestamp":44}"#,
                Some((NetworkEvents, 44)),
            ),
        ]
    }

    #[test]
    fn entries_are_classified_and_aged_as_cln_does() {
        for (list, entry, want) in cases() {
            let entry: Value = serde_json::from_str(entry).expect("json");
            assert_eq!(list.classify(&entry), want, "{entry}");
        }
    }

    #[test]
    fn deletions_name_the_entry() {
        let e = json!({"payment_hash": "ab", "status": "failed", "groupid": 2, "created_at": 1});
        assert_eq!(
            List::Sendpays.delete_params(&e),
            json!({"payment_hash": "ab", "status": "failed", "groupid": 2, "partid": 0})
        );
        let e = json!({"in_channel": "1x2x3", "in_htlc_id": 4, "status": "settled"});
        assert_eq!(List::Forwards.delete_params(&e), e);
        let e = json!({"label": "l", "status": "paid", "paid_at": 3});
        assert_eq!(
            List::Invoices.delete_params(&e),
            json!({"label": "l", "status": "paid"})
        );
    }
}
