//! The income statement: which moves are income or expense, and how they are written for
//! `bkpr-listincome`, the CSV formats of `bkpr-dumpincomecsv` (cointracker, koinly,
//! harmony, quickbooks) and `bkpr-report`'s format strings. Pure, over a [`Ledger`].

use std::fmt::Write as _;

use crate::ledger::{Account, ChainEvent, ChannelEvent, EXTERNAL, Ledger, OnchainFee, WALLET};

/// One line of the income statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Income {
    pub account: String,
    pub tag: String,
    pub credit: u64,
    pub debit: u64,
    pub fees: u64,
    pub timestamp: u64,
    pub description: Option<String>,
    pub outpoint: Option<String>,
    pub txid: Option<String>,
    pub payment_id: Option<String>,
}

fn from_chain(l: &Ledger, e: &ChainEvent, account: &str, credit: u64, debit: u64) -> Income {
    Income {
        account: account.to_string(),
        tag: e.tag.clone(),
        credit,
        debit,
        fees: 0,
        timestamp: e.timestamp,
        description: l.chain_description(e).map(str::to_string),
        outpoint: Some(e.outpoint()),
        txid: e.spending_txid.clone(),
        payment_id: e.payment_id.clone(),
    }
}

fn from_channel(l: &Ledger, e: &ChannelEvent, credit: u64, debit: u64) -> Income {
    Income {
        account: e.account.clone(),
        tag: e.tag.clone(),
        credit,
        debit,
        fees: e.fees,
        timestamp: e.timestamp,
        description: l.channel_description(e).map(str::to_string),
        outpoint: None,
        txid: None,
        payment_id: e.payment_id.clone(),
    }
}

fn from_fee(f: &OnchainFee) -> Income {
    // A fee step's credit is a cost to us.
    Income {
        account: f.account.clone(),
        tag: "onchain_fee".into(),
        credit: f.debit,
        debit: f.credit,
        fees: 0,
        timestamp: f.timestamp,
        description: None,
        outpoint: None,
        txid: Some(f.txid.clone()),
        payment_id: None,
    }
}

fn chain_income(l: &Ledger, acct: Option<&Account>, e: &ChainEvent) -> Option<Income> {
    let external = e.account == EXTERNAL;
    let origin = e.origin.as_deref().unwrap_or(&e.account);
    match e.tag.as_str() {
        // Paid out to them from our side: ours to count, on the channel it came from.
        "htlc_fulfill" if external => Some(from_chain(l, e, origin, e.debit, e.credit)),
        "htlc_fulfill" => Some(from_chain(l, e, &e.account, e.credit, e.debit)),
        // Anchors cost only the opener.
        "anchor" if acct.is_some_and(|a| a.we_opened) => {
            Some(from_chain(l, e, &e.account, e.debit, e.credit))
        }
        "deposit" if external => {
            // Sends to others count once confirmed, as withdrawals of their source.
            if l.blockheight(e) == 0 {
                return None;
            }
            let mut i = from_chain(l, e, origin, e.debit, e.credit);
            i.tag = "withdrawal".into();
            Some(i)
        }
        // A deposit is income unless our own coins paid for it.
        "deposit" if !l.spent_into(&e.txid) => {
            Some(from_chain(l, e, &e.account, e.credit, e.debit))
        }
        _ => None,
    }
}

fn channel_income(l: &Ledger, e: &ChannelEvent) -> Option<Income> {
    if e.credit == 0 && e.debit == 0 {
        return None;
    }
    match e.tag.as_str() {
        "penalty_adj" => (e.credit > 0).then(|| from_channel(l, e, e.credit, e.debit)),
        "invoice" if l.is_rebalance(e.id) => None,
        // What we paid, less the routing fee (a line of its own).
        "invoice" if e.debit > 0 => {
            Some(from_channel(l, e, e.credit, e.debit.saturating_sub(e.fees)))
        }
        // Forwards earn on the outgoing side only.
        "routed" => (e.debit > 0).then(|| from_channel(l, e, e.fees, 0)),
        _ => Some(from_channel(l, e, e.credit, e.debit)),
    }
}

/// The income statement for moves in `(start, end]`, by time: chain moves first, then
/// channel moves, then fees at equal times. `consolidate`: one fee line per transaction
/// and account instead of each step.
pub fn list(l: &Ledger, start: u64, end: u64, consolidate: bool) -> Vec<Income> {
    let in_range = |t: u64| t > start && t <= end;
    let chain: Vec<&ChainEvent> = sorted(l.chain.iter().filter(|e| in_range(e.timestamp)));
    let channel: Vec<&ChannelEvent> = {
        let mut v: Vec<&ChannelEvent> =
            l.channel.iter().filter(|e| in_range(e.timestamp)).collect();
        v.sort_by_key(|e| (e.timestamp, e.id));
        v
    };
    let fees: Vec<Income> = if consolidate {
        let mut v: Vec<Income> = Ledger::fee_sums(l.fees_between(start, end))
            .into_iter()
            .filter(|s| s.paid > 0)
            .map(|s| Income {
                account: s.account,
                tag: "onchain_fee".into(),
                credit: 0,
                debit: s.paid,
                fees: 0,
                timestamp: s.last_timestamp,
                description: None,
                outpoint: None,
                txid: Some(s.txid),
                payment_id: None,
            })
            .collect();
        v.sort_by_key(|i| i.timestamp);
        v
    } else {
        l.fees_between(start, end)
            .into_iter()
            .map(from_fee)
            .collect()
    };
    let mut out = Vec::new();
    let order = by_time(
        &chain.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        &channel.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
        &fees.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
    );
    for (list, n) in order {
        match list {
            Source::Chain => {
                let e = chain[n];
                out.extend(chain_income(l, l.account(&e.account), e));
            }
            Source::Channel => {
                let e = channel[n];
                out.extend(channel_income(l, e));
                if e.tag == "invoice" && e.debit > 0 && e.fees > 0 {
                    let mut fee = from_channel(l, e, 0, e.fees);
                    fee.tag = if l.is_rebalance(e.id) {
                        "rebalance_fee"
                    } else {
                        "invoice_fee"
                    }
                    .into();
                    out.push(fee);
                }
            }
            Source::Fee => out.push(fees[n].clone()),
        }
    }
    out
}

/// Which list an event comes from, in [`by_time`]'s order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Chain,
    Channel,
    Fee,
}

/// Merges three lists already sorted by time: the earliest first, chain moves before
/// channel moves before fees at equal times. Gives (list, position) pairs.
pub fn by_time(chain: &[u64], channel: &[u64], fees: &[u64]) -> Vec<(Source, usize)> {
    let mut out = Vec::with_capacity(chain.len() + channel.len() + fees.len());
    let (mut i, mut j, mut k) = (0, 0, 0);
    loop {
        let tc = chain.get(i).copied();
        let th = channel.get(j).copied();
        let tf = fees.get(k).copied();
        let Some(lowest) = [tc, th, tf].into_iter().flatten().min() else {
            break;
        };
        if tc == Some(lowest) {
            out.push((Source::Chain, i));
            i += 1;
        } else if th == Some(lowest) {
            out.push((Source::Channel, j));
            j += 1;
        } else {
            out.push((Source::Fee, k));
            k += 1;
        }
    }
    out
}

/// Chain moves by time, then id.
pub fn sorted<'a>(it: impl Iterator<Item = &'a ChainEvent>) -> Vec<&'a ChainEvent> {
    let mut v: Vec<&ChainEvent> = it.collect();
    v.sort_by_key(|e| (e.timestamp, e.id));
    v
}

/// Bitcoin with 11 decimals, as CLN writes amounts in reports (`0` for nothing).
pub fn btc(msat: u64) -> String {
    if msat == 0 {
        return "0".into();
    }
    format!("{}.{:011}", msat / 100_000_000_000, msat % 100_000_000_000)
}

/// UTC calendar date and time of a UNIX timestamp.
pub fn utc(ts: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (ts / 86_400) as i64;
    let secs = ts % 86_400;
    // Civil-from-days (proleptic Gregorian), days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
    )
}

/// The CSV formats of `bkpr-dumpincomecsv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvFormat {
    Cointracker,
    Koinly,
    Harmony,
    Quickbooks,
}

impl CsvFormat {
    /// Every format, in CLN's order.
    pub const ALL: [CsvFormat; 4] = [
        CsvFormat::Cointracker,
        CsvFormat::Koinly,
        CsvFormat::Harmony,
        CsvFormat::Quickbooks,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            CsvFormat::Cointracker => "cointracker",
            CsvFormat::Koinly => "koinly",
            CsvFormat::Harmony => "harmony",
            CsvFormat::Quickbooks => "quickbooks",
        }
    }

    /// The format called `name`.
    pub fn parse(name: &str) -> Option<CsvFormat> {
        CsvFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// `"cointracker","koinly",...` for error messages.
    pub fn list() -> String {
        CsvFormat::ALL
            .iter()
            .map(|f| format!("\"{}\"", f.name()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A description made safe for a CSV cell: double quotes become single ones, the rest is
/// JSON-escaped, and the whole is quoted.
fn csv_safe(s: &str) -> String {
    serde_json::Value::String(s.replace('"', "'")).to_string()
}

/// The asset name: `btc` on mainnet, else the network's bech32 prefix.
fn asset(hrp: &str) -> &str {
    if hrp == "bc" { "btc" } else { hrp }
}

/// The id a transaction line is known by: txid, else payment id, else outpoint.
fn tx_ref(i: &Income) -> &str {
    i.txid
        .as_deref()
        .or(i.payment_id.as_deref())
        .or(i.outpoint.as_deref())
        .unwrap_or("")
}

fn amount_cell(out: &mut String, msat: u64, hrp: &str) {
    if msat > 0 {
        let _ = write!(out, "{},{}", btc(msat), asset(hrp));
    } else {
        out.push(',');
    }
}

fn harmony_type(i: &Income) -> String {
    if i.tag == "onchain_fee" {
        return "fee:network".into();
    }
    if i.credit == 0 && i.tag == "penalty" {
        return "loss:penalty".into();
    }
    let kind = if i.account == WALLET {
        "transfer"
    } else if i.credit > 0 {
        "income"
    } else {
        "expense"
    };
    format!("{kind}:{}", i.tag)
}

/// The whole CSV file for `events`; `hrp` is the network's bech32 prefix.
pub fn csv(format: CsvFormat, events: &[Income], hrp: &str) -> String {
    let mut out = String::new();
    out.push_str(match format {
        CsvFormat::Cointracker => {
            "Date,Received Quantity,Received Currency,Sent Quantity,Sent Currency,\
             Fee Amount,Fee Currency,Tag,Account"
        }
        CsvFormat::Koinly => {
            "Date,Sent Amount,Sent Currency,Received Amount,Received Currency,\
             Fee Amount,Fee Currency,Label,Description,TxHash"
        }
        CsvFormat::Harmony => {
            "HarmonyCSV v0.2,,,,,,,,,\nProvenance,cln-bookkeeper,,,,,,,,\n,,,,,,,,,\n\
             Timestamp,Venue,Type,Amount,Asset,Transaction ID,Order ID,Account,Network ID,Note"
        }
        CsvFormat::Quickbooks => "Date,Description,Credit,Debit",
    });
    for i in events {
        let (y, mo, d, h, mi, s) = utc(i.timestamp);
        // Fees of paid invoices ride on the invoice's line in these two.
        let inline_fee = matches!(format, CsvFormat::Cointracker | CsvFormat::Koinly);
        if inline_fee && i.tag == "invoice_fee" {
            continue;
        }
        let fee = if i.tag == "invoice" { i.fees } else { 0 };
        out.push('\n');
        match format {
            CsvFormat::Cointracker => {
                let _ = write!(out, "{mo:02}/{d:02}/{y:04} {h:02}:{mi:02}:{s:02},");
                amount_cell(&mut out, i.credit, hrp);
                out.push(',');
                amount_cell(&mut out, i.debit, hrp);
                out.push(',');
                amount_cell(&mut out, fee, hrp);
                let tag = match i.tag.as_str() {
                    "penalty" if i.debit > 0 => "lost",
                    "invoice" | "routed" => "payment",
                    _ => "",
                };
                let _ = write!(out, ",{tag},{}", i.account);
            }
            CsvFormat::Koinly => {
                let _ = write!(out, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC,");
                amount_cell(&mut out, i.debit, hrp);
                out.push(',');
                amount_cell(&mut out, i.credit, hrp);
                out.push(',');
                amount_cell(&mut out, fee, hrp);
                let desc = i.description.as_deref().map(csv_safe).unwrap_or_default();
                let _ = write!(out, ",{},{desc},{}", i.tag, tx_ref(i));
            }
            CsvFormat::Harmony => {
                let amount = if i.debit > 0 {
                    format!("-{}", btc(i.debit))
                } else {
                    btc(i.credit)
                };
                let _ = write!(
                    out,
                    "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z,cln,{},{amount},{},{},{},{},{},{}",
                    harmony_type(i),
                    asset(hrp),
                    tx_ref(i),
                    i.payment_id.as_deref().unwrap_or(""),
                    i.account,
                    i.outpoint.as_deref().unwrap_or(""),
                    i.description.as_deref().map(csv_safe).unwrap_or_default(),
                );
            }
            CsvFormat::Quickbooks => {
                let desc = i
                    .description
                    .as_deref()
                    .map_or_else(|| "no desc".to_string(), csv_safe);
                let credit = if i.credit > 0 {
                    btc(i.credit)
                } else {
                    String::new()
                };
                let debit = if i.debit > 0 {
                    btc(i.debit)
                } else {
                    String::new()
                };
                let _ = write!(
                    out,
                    "{d:02}/{mo:02}/{y:04},{} ({}) {}: {desc},{credit},{debit}",
                    i.tag,
                    i.account,
                    asset(hrp)
                );
            }
        }
    }
    out
}

/// How `bkpr-report` escapes the values it substitutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    Csv,
}

/// A parsed `bkpr-report` format: literal text and `{tag[?if-set][:if-not-set]}` pieces.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Tag {
        name: &'static str,
        if_set: Option<Vec<Piece>>,
        if_not_set: Option<Vec<Piece>>,
    },
}

/// The tags a report may use.
pub const REPORT_TAGS: [&str; 17] = [
    "account",
    "tag",
    "description",
    "credit",
    "debit",
    "fees",
    "localtime",
    "utctime",
    "outpoint",
    "txid",
    "payment_id",
    "bkpr-currency",
    "currencyrate",
    "creditdebit",
    "currencycredit",
    "currencydebit",
    "currencycreditdebit",
];

/// Parses a report format; the error names what is wrong.
pub fn parse_report(format: &str) -> Result<Vec<Piece>, String> {
    let chars: Vec<char> = format.chars().collect();
    let mut pos = 0;
    let pieces = parse_pieces(&chars, &mut pos, &[])?;
    Ok(pieces)
}

fn parse_pieces(c: &[char], pos: &mut usize, stops: &[char]) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    loop {
        let Some(&ch) = c.get(*pos) else {
            if stops.is_empty() {
                break;
            }
            return Err("Unterminated tag".into());
        };
        if stops.contains(&ch) {
            break;
        }
        if ch != '{' {
            text.push(ch);
            *pos += 1;
            continue;
        }
        if c.get(*pos + 1) == Some(&'{') {
            text.push('{');
            *pos += 2;
            continue;
        }
        if !text.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut text)));
        }
        let start = *pos + 1;
        let mut end = start;
        while end < c.len() && !matches!(c[end], '?' | ':' | '}') {
            end += 1;
        }
        let tag: String = c[start..end].iter().collect();
        if end == c.len() {
            return Err(format!("Unterminated tag {tag}"));
        }
        let name = REPORT_TAGS
            .iter()
            .copied()
            .find(|t| *t == tag)
            .ok_or_else(|| format!("Unknown tag {tag}"))?;
        let (mut if_set, mut if_not_set) = (None, None);
        *pos = end + 1;
        match c[end] {
            '?' => {
                if_set = Some(parse_pieces(c, pos, &['}', ':'])?);
                if c.get(*pos) == Some(&':') {
                    *pos += 1;
                    if_not_set = Some(parse_pieces(c, pos, &['}'])?);
                }
                *pos += 1;
            }
            ':' => {
                if_not_set = Some(parse_pieces(c, pos, &['}'])?);
                *pos += 1;
            }
            _ => {}
        }
        out.push(Piece::Tag {
            name,
            if_set,
            if_not_set,
        });
    }
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// A tag's value for an event: None when unavailable; `Some("0")` amounts count as
/// unavailable inside conditionals.
fn tag_value(name: &str, i: &Income) -> Option<String> {
    let amount = |m: u64| Some(btc(m));
    let time = |ts: u64| {
        let (y, mo, d, h, mi, s) = utc(ts);
        Some(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}"))
    };
    match name {
        "account" => Some(i.account.clone()),
        "tag" => Some(i.tag.clone()),
        "description" => i.description.clone(),
        "credit" => amount(i.credit),
        "debit" => amount(i.debit),
        "fees" => amount(i.fees),
        "localtime" | "utctime" => time(i.timestamp),
        "outpoint" => i.outpoint.clone(),
        "txid" => i.txid.clone(),
        "payment_id" => i.payment_id.clone(),
        "creditdebit" if i.credit > 0 => Some(format!("+{}", btc(i.credit))),
        "creditdebit" if i.debit > 0 => Some(format!("-{}", btc(i.debit))),
        "creditdebit" => Some("0".into()),
        // No currency conversion in Fulgur (no bkpr-currency).
        "currencycreditdebit" if i.credit == 0 && i.debit == 0 => Some("0".into()),
        _ => None,
    }
}

fn escape(v: &str, esc: Escape) -> String {
    if esc == Escape::None || !v.contains([',', '"', '\n', '\r']) {
        return v.to_string();
    }
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// One report line for an event.
pub fn format_event(pieces: &[Piece], esc: Escape, i: &Income) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Tag {
                name,
                if_set,
                if_not_set,
            } => {
                let mut v = tag_value(name, i);
                let conditional = if_set.is_some() || if_not_set.is_some();
                let is_amount = matches!(*name, "credit" | "debit" | "fees" | "creditdebit");
                if conditional && is_amount && v.as_deref() == Some("0") {
                    v = None;
                }
                match (v, if_set, if_not_set) {
                    (Some(_), Some(set), _) => out.push_str(&format_event(set, esc, i)),
                    (Some(v), None, _) => out.push_str(&escape(&v, esc)),
                    (None, _, Some(unset)) => out.push_str(&format_event(unset, esc, i)),
                    (None, _, None) => {}
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::tests::{CHAN, HASH, T1, T2, channel, opened};
    use crate::ledger::{Ledger, WALLET};

    #[test]
    fn deposit_and_open_fee_and_payments() {
        let mut l = opened();
        l.add_channel_move(&channel(1, "invoice", 0, 101_000, 1_000, 30))
            .unwrap();
        l.add_channel_move(&channel(2, "routed", 0, 50_000, 7, 31))
            .unwrap();
        l.add_channel_move(&channel(3, "routed", 50_007, 0, 7, 31))
            .unwrap();
        l.payment_descriptions
            .insert(HASH.into(), "coffee, \"black\"".into());
        let inc = list(&l, 0, u64::MAX, true);
        let tags: Vec<(&str, &str, u64, u64)> = inc
            .iter()
            .map(|i| (i.account.as_str(), i.tag.as_str(), i.credit, i.debit))
            .collect();
        assert_eq!(
            tags,
            vec![
                (WALLET, "deposit", 1_000_000_000, 0),
                (CHAN, "onchain_fee", 0, 4_000_000),
                (CHAN, "invoice", 0, 100_000),
                (CHAN, "invoice_fee", 0, 1_000),
                (CHAN, "routed", 7, 0),
            ]
        );
        assert_eq!(inc[0].outpoint.as_deref(), Some(&*format!("{T1}:0")));
        assert_eq!(inc[1].txid.as_deref(), Some(T2));
        // Not consolidated: every fee step, wallet charge and refund included.
        let steps = list(&l, 0, u64::MAX, false);
        assert!(steps.iter().filter(|i| i.tag == "onchain_fee").count() >= 3);
        // Time box: (start, end].
        assert!(list(&l, 30, 31, true).iter().all(|i| i.tag == "routed"));

        let koinly = csv(CsvFormat::Koinly, &inc, "bcrt");
        let lines: Vec<&str> = koinly.lines().collect();
        assert_eq!(lines.len(), 5, "{koinly}");
        assert!(lines[0].starts_with("Date,Sent Amount"));
        assert_eq!(
            lines[3],
            format!(
                "1970-01-01 00:00 UTC,0.00000100000,bcrt,,,0.00000001000,bcrt,invoice,\"coffee, 'black'\",{HASH}"
            )
        );
        let ct = csv(CsvFormat::Cointracker, &inc, "bc");
        assert!(ct.contains("01/01/1970 00:00:30,,,0.00000100000,btc,0.00000001000,btc,payment,"));
        let h = csv(CsvFormat::Harmony, &inc, "bcrt");
        assert_eq!(h.lines().count(), 4 + 5);
        assert!(h.contains(",cln,transfer:deposit,0.01000000000,bcrt,"));
        assert!(h.contains(",fee:network,-0.00004000000,"));
        let q = csv(CsvFormat::Quickbooks, &inc, "bcrt");
        assert!(q.contains("01/01/1970,deposit (wallet) bcrt: no desc,0.01000000000,"));
    }

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(utc(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(utc(1_700_000_000), (2023, 11, 14, 22, 13, 20));
    }

    #[test]
    fn report_formats() {
        let i = Income {
            account: "wallet".into(),
            tag: "deposit".into(),
            credit: 150_000_000,
            debit: 0,
            fees: 0,
            timestamp: 60,
            description: Some("a,b".into()),
            outpoint: None,
            txid: None,
            payment_id: None,
        };
        let p = parse_report("{account} {{ {credit} {debit} {fees?F:nofee} {txid:notx}").unwrap();
        assert_eq!(
            format_event(&p, Escape::None, &i),
            "wallet { 0.00150000000 0 nofee notx"
        );
        let p = parse_report("{description},{creditdebit},{utctime}").unwrap();
        assert_eq!(
            format_event(&p, Escape::Csv, &i),
            "\"a,b\",+0.00150000000,1970-01-01 00:01:00"
        );
        assert_eq!(parse_report("{nosuch}").unwrap_err(), "Unknown tag nosuch");
        assert!(parse_report("{account").is_err());
        assert!(parse_report("{account?x").is_err());
    }

    #[test]
    fn rebalances_are_fees_only() {
        let mut l = opened();
        l.add_channel_move(&channel(1, "invoice", 1000, 0, 0, 30))
            .unwrap();
        l.add_channel_move(&channel(2, "invoice", 0, 1010, 10, 30))
            .unwrap();
        let inc = list(&l, 20, u64::MAX, true);
        assert_eq!(inc.len(), 1, "{inc:?}");
        assert_eq!(inc[0].tag, "rebalance_fee");
        assert_eq!(inc[0].debit, 10);
        let _ = Ledger::fee_sums(&l.fees);
    }
}
