//! The books: every chain and channel move the node reported, the accounts they name, the
//! on-chain fees worked out from them, rebalances and descriptions. Pure: moves go in as
//! JSON objects (rows of `listchainmoves`/`listchannelmoves`), queries come out as values,
//! so all of it is tested without a node. It does not talk to the node, keep anything on
//! disk, or format replies (`main.rs` and `income.rs` do).

use std::collections::HashMap;

use serde_json::Value;

/// The on-chain wallet's account.
pub const WALLET: &str = "wallet";
/// Everything outside the node (a peer's output, an address we paid).
pub const EXTERNAL: &str = "external";

/// A channel account is any account that is neither the wallet nor external.
pub fn is_channel(name: &str) -> bool {
    name != WALLET && name != EXTERNAL
}

/// A move that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMove(pub String);

impl std::fmt::Display for BadMove {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An output created (`spending_txid` none) or spent, as `listchainmoves` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainEvent {
    pub id: u64,
    pub account: String,
    pub origin: Option<String>,
    pub tag: String,
    pub credit: u64,
    pub debit: u64,
    pub output_value: u64,
    pub timestamp: u64,
    pub txid: String,
    pub vout: u32,
    pub spending_txid: Option<String>,
    pub payment_id: Option<String>,
    pub blockheight: u32,
    pub stealable: bool,
    pub splice: bool,
}

impl ChainEvent {
    /// `txid:vout`.
    pub fn outpoint(&self) -> String {
        format!("{}:{}", self.txid, self.vout)
    }
}

/// A balance change inside a channel, as `listchannelmoves` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelEvent {
    pub id: u64,
    pub account: String,
    pub tag: String,
    pub credit: u64,
    pub debit: u64,
    pub fees: u64,
    pub payment_id: Option<String>,
    pub part_id: Option<u64>,
    pub timestamp: u64,
}

/// A step in the fee worked out for one transaction and account: the fee so far is the
/// sum of credits less debits of its steps.
#[derive(Debug, Clone, PartialEq)]
pub struct OnchainFee {
    pub account: String,
    pub txid: String,
    pub credit: u64,
    pub debit: u64,
    pub timestamp: u64,
}

/// The fee one account paid in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct FeeSum {
    pub account: String,
    pub txid: String,
    pub paid: u64,
    pub last_timestamp: u64,
}

/// What the books know of an account beyond its moves.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub name: String,
    pub peer_id: Option<String>,
    pub we_opened: bool,
    pub leased: bool,
    /// The chain move that opened (or proposed) the channel.
    pub open_event: Option<u64>,
    /// The chain move that spent the funding output (not a splice).
    pub closed_event: Option<u64>,
    /// How many outputs the closing transaction has.
    pub closed_count: u32,
    /// The block at which every output of the close was resolved.
    pub resolved_block: Option<u64>,
}

/// An output and the move spending it, for `bkpr-inspect`.
#[derive(Debug, Clone, Default)]
pub struct TxoPair<'a> {
    pub txo: Option<&'a ChainEvent>,
    pub spend: Option<&'a ChainEvent>,
}

/// The outputs of one transaction.
#[derive(Debug, Clone)]
pub struct TxoSet<'a> {
    pub txid: String,
    pub pairs: Vec<TxoPair<'a>>,
}

/// A description lookup the caller should make for a payment just read (`credit`: an
/// invoice we were paid, else a payment we made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub payment_hash: String,
    pub incoming: bool,
}

/// Everything the bookkeeper knows.
#[derive(Debug, Default)]
pub struct Ledger {
    pub chain: Vec<ChainEvent>,
    pub channel: Vec<ChannelEvent>,
    accounts: Vec<Account>,
    account_index: HashMap<String, usize>,
    pub fees: Vec<OnchainFee>,
    /// Channel move ids paired as both halves of a payment to ourselves.
    rebalances: HashMap<u64, u64>,
    /// Confirmation heights learnt later for external outputs reported unconfirmed.
    blockheights: HashMap<String, u32>,
    /// Last `created_index` read from each list.
    pub chain_index: u64,
    pub channel_index: u64,
    /// Descriptions by payment hash and by `txid:vout`.
    pub payment_descriptions: HashMap<String, String>,
    pub utxo_descriptions: HashMap<String, String>,
}

/// An msat amount: a number or CLN's `"123msat"` string.
fn msat(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str()?.strip_suffix("msat")?.parse().ok())
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value, BadMove> {
    v.get(name)
        .ok_or_else(|| BadMove(format!("move has no {name}: {v}")))
}

fn field_u64(v: &Value, name: &str) -> Result<u64, BadMove> {
    field(v, name)?
        .as_u64()
        .ok_or_else(|| BadMove(format!("{name} is not a number: {v}")))
}

fn field_msat(v: &Value, name: &str) -> Result<u64, BadMove> {
    msat(field(v, name)?).ok_or_else(|| BadMove(format!("{name} is not an amount: {v}")))
}

fn field_str(v: &Value, name: &str) -> Result<String, BadMove> {
    field(v, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| BadMove(format!("{name} is not a string: {v}")))
}

fn opt_str(v: &Value, name: &str) -> Option<String> {
    v.get(name).and_then(Value::as_str).map(str::to_string)
}

/// Splits `txid:vout`.
pub fn parse_outpoint(s: &str) -> Option<(String, u32)> {
    let (txid, vout) = s.rsplit_once(':')?;
    if txid.len() != 64 || !txid.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((txid.to_ascii_lowercase(), vout.parse().ok()?))
}

impl Ledger {
    /// Empty books with the wallet account (callers expect it to exist).
    pub fn new() -> Self {
        let mut l = Ledger::default();
        l.account_mut(WALLET);
        l
    }

    /// Every account, in the order first seen.
    pub fn accounts(&self) -> &[Account] {
        &self.accounts
    }

    /// The account called `name`.
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.account_index.get(name).map(|i| &self.accounts[*i])
    }

    fn account_mut(&mut self, name: &str) -> &mut Account {
        let i = match self.account_index.get(name) {
            Some(i) => *i,
            None => {
                self.accounts.push(Account {
                    name: name.to_string(),
                    ..Account::default()
                });
                self.account_index
                    .insert(name.to_string(), self.accounts.len() - 1);
                self.accounts.len() - 1
            }
        };
        &mut self.accounts[i]
    }

    /// The chain move with this id.
    pub fn chain_event(&self, id: u64) -> Option<&ChainEvent> {
        // Ids only grow, so the list is sorted by them.
        self.chain
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(|i| &self.chain[i])
    }

    /// The block a chain move happened in, using heights learnt later for external
    /// outputs first reported unconfirmed.
    pub fn blockheight(&self, e: &ChainEvent) -> u32 {
        if e.blockheight == 0 {
            self.blockheights.get(&e.txid).copied().unwrap_or(0)
        } else {
            e.blockheight
        }
    }

    /// Whether a channel move is half of a payment to ourselves.
    pub fn is_rebalance(&self, id: u64) -> bool {
        self.rebalances.contains_key(&id)
    }

    /// Reads one row of `listchainmoves` (rows already read are ignored).
    pub fn add_chain_move(&mut self, v: &Value) -> Result<(), BadMove> {
        let id = field_u64(v, "created_index")?;
        if id <= self.chain_index {
            return Ok(());
        }
        let utxo = field_str(v, "utxo")?;
        let (txid, vout) =
            parse_outpoint(&utxo).ok_or_else(|| BadMove(format!("bad utxo {utxo}")))?;
        let extra: Vec<String> = v
            .get("extra_tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let has = |t: &str| extra.iter().any(|x| x == t);
        let e = ChainEvent {
            id,
            account: field_str(v, "account_id")?,
            origin: opt_str(v, "originating_account"),
            tag: field_str(v, "primary_tag")?,
            credit: field_msat(v, "credit_msat")?,
            debit: field_msat(v, "debit_msat")?,
            output_value: field_msat(v, "output_msat")?,
            timestamp: field_u64(v, "timestamp")?,
            txid,
            vout,
            spending_txid: opt_str(v, "spending_txid"),
            payment_id: opt_str(v, "payment_hash"),
            blockheight: v
                .get("blockheight")
                .and_then(Value::as_u64)
                .and_then(|h| u32::try_from(h).ok())
                .unwrap_or(0),
            stealable: has("stealable"),
            splice: has("splice"),
        };
        let output_count = v
            .get("output_count")
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let peer_id = opt_str(v, "peer_id");
        self.chain_index = id;
        if let Some(o) = &e.origin {
            self.account_mut(o);
        }
        {
            let acct = self.account_mut(&e.account);
            for tag in std::iter::once(e.tag.as_str()).chain(extra.iter().map(String::as_str)) {
                match tag {
                    "channel_proposed" | "channel_open" if acct.open_event.is_none() => {
                        acct.open_event = Some(id)
                    }
                    "channel_close" if !e.splice => acct.closed_event = Some(id),
                    "leased" => acct.leased = true,
                    "opener" => acct.we_opened = true,
                    _ => {}
                }
            }
            if acct.peer_id.is_none() {
                acct.peer_id = peer_id;
            }
            if !e.splice && output_count > 0 {
                acct.closed_count = output_count;
            }
        }
        let fee_txid = e.spending_txid.clone().unwrap_or_else(|| e.txid.clone());
        let spent_in = e.spending_txid.clone().map(|t| (t, e.blockheight));
        let account = e.account.clone();
        let ev_index = self.chain.len();
        self.chain.push(e);
        self.update_onchain_fees(&fee_txid);
        // A spend confirms the external outputs its transaction created.
        if let Some((txid, height)) = spent_in {
            let unconfirmed = self
                .chain
                .iter()
                .any(|c| c.account == EXTERNAL && c.blockheight == 0 && c.txid == txid);
            if unconfirmed && height > 0 {
                self.blockheights.insert(txid, height);
            }
        }
        self.close_checks(ev_index, &account);
        Ok(())
    }

    /// Reads one row of `listchannelmoves`; says which description to look up, if any.
    pub fn add_channel_move(&mut self, v: &Value) -> Result<Option<Lookup>, BadMove> {
        let id = field_u64(v, "created_index")?;
        if id <= self.channel_index {
            return Ok(None);
        }
        let e = ChannelEvent {
            id,
            account: field_str(v, "account_id")?,
            tag: field_str(v, "primary_tag")?,
            credit: field_msat(v, "credit_msat")?,
            debit: field_msat(v, "debit_msat")?,
            fees: v.get("fees_msat").and_then(msat).unwrap_or(0),
            payment_id: opt_str(v, "payment_hash"),
            part_id: v.get("part_id").and_then(Value::as_u64),
            timestamp: field_u64(v, "timestamp")?,
        };
        self.channel_index = id;
        self.account_mut(&e.account);
        let mut lookup = None;
        if let (Some(hash), "invoice") = (&e.payment_id, e.tag.as_str()) {
            // The receiving half always comes first, so pair on the paying half.
            if e.debit > 0 {
                self.record_rebalance(&e);
            }
            lookup = Some(Lookup {
                payment_hash: hash.clone(),
                incoming: e.credit > 0,
            });
        }
        self.channel.push(e);
        Ok(lookup)
    }

    fn record_rebalance(&mut self, out: &ChannelEvent) {
        let received = out.debit.saturating_sub(out.fees);
        let partner = self
            .channel
            .iter()
            .find(|c| {
                c.payment_id == out.payment_id
                    && c.credit == received
                    && !self.rebalances.contains_key(&c.id)
            })
            .map(|c| c.id);
        if let Some(p) = partner {
            self.rebalances.insert(out.id, p);
            self.rebalances.insert(p, out.id);
        }
    }

    /// Moves touching `txid`: outputs it created and spends made by it, by account then id.
    pub fn events_by_txid(&self, txid: &str) -> Vec<&ChainEvent> {
        let mut v: Vec<&ChainEvent> = self
            .chain
            .iter()
            .filter(|e| match &e.spending_txid {
                Some(s) => s == txid,
                None => e.txid == txid,
            })
            .collect();
        v.sort_by(|a, b| a.account.cmp(&b.account).then(a.id.cmp(&b.id)));
        v
    }

    /// Records that `account`'s fee for `txid` is now `amount` (a step for the difference).
    fn set_fee(&mut self, account: &str, txid: &str, amount: u64, timestamp: u64) {
        let current: i128 = self
            .fees
            .iter()
            .filter(|f| f.account == account && f.txid == txid)
            .map(|f| i128::from(f.credit) - i128::from(f.debit))
            .sum();
        let diff = i128::from(amount) - current;
        if diff == 0 {
            return;
        }
        let (credit, debit) = if diff > 0 {
            (u64::try_from(diff).unwrap_or(u64::MAX), 0)
        } else {
            (0, u64::try_from(-diff).unwrap_or(u64::MAX))
        };
        self.fees.push(OnchainFee {
            account: account.to_string(),
            txid: txid.to_string(),
            credit,
            debit,
            timestamp,
        });
    }

    /// Whether `txid` is the transaction closing the channel of `account`.
    fn is_close_tx(&self, account: &str, txid: &str) -> bool {
        self.account(account)
            .and_then(|a| a.closed_event)
            .and_then(|id| self.chain_event(id))
            .is_some_and(|c| c.spending_txid.as_deref() == Some(txid))
    }

    /// Works out the miner fee of a non-closing transaction once its inputs cover its
    /// outputs, and shares it between our accounts in it (the wallet only pays when
    /// alone; external never pays).
    fn update_onchain_fees(&mut self, txid: &str) {
        let events = self.events_by_txid(txid);
        if events.len() < 2 {
            return;
        }
        let (mut withdrawn, mut deposited) = (0u64, 0u64);
        let mut accounts: Vec<(String, u64)> = Vec::new();
        for e in &events {
            if self.is_close_tx(&e.account, txid) {
                return;
            }
            if e.spending_txid.is_some() {
                withdrawn = withdrawn.saturating_add(e.debit);
            } else {
                deposited = deposited.saturating_add(e.credit);
            }
            if accounts.last().is_none_or(|(a, _)| *a != e.account) {
                accounts.push((e.account.clone(), e.timestamp));
            }
        }
        let ours = accounts.iter().filter(|(a, _)| a != EXTERNAL).count() as u64;
        if ours == 0 || withdrawn == 0 || deposited == 0 || withdrawn < deposited {
            return;
        }
        let fees = withdrawn - deposited;
        let has_wallet = accounts.iter().any(|(a, _)| a == WALLET);
        let skip_wallet = ours > 1 && has_wallet;
        let payers = if skip_wallet { ours - 1 } else { ours };
        let share = fees / payers;
        let mut extra = fees % payers;
        for (account, ts) in accounts {
            if account == EXTERNAL {
                continue;
            }
            if skip_wallet && account == WALLET {
                // It may have been charged while it was alone in the transaction.
                self.set_fee(&account, txid, 0, ts);
                continue;
            }
            let mut mine = share;
            if extra > 0 {
                extra -= 1;
                mine += 1;
            }
            self.set_fee(&account, txid, mine, ts);
        }
    }

    /// The channel account closed by the transaction `txid`, if any.
    fn closing_account(&self, txid: &str) -> Option<String> {
        self.chain
            .iter()
            .find(|e| {
                e.tag == "channel_close" && !e.splice && e.spending_txid.as_deref() == Some(txid)
            })
            .map(|e| e.account.clone())
    }

    /// After a move: if it may finish resolving a closed channel, note the height and the
    /// close's fee.
    fn close_checks(&mut self, ev_index: usize, account: &str) {
        let e = &self.chain[ev_index];
        let closed = if !is_channel(account) && e.origin.is_some() {
            e.origin.clone()
        } else if !is_channel(account) && e.spending_txid.is_none() {
            self.closing_account(&e.txid)
        } else {
            Some(account.to_string())
        };
        let Some(name) = closed else { return };
        if self.account(&name).and_then(|a| a.closed_event).is_none() {
            return;
        }
        let height = self.close_height(&name);
        if height == 0 {
            return;
        }
        self.account_mut(&name).resolved_block = Some(height);
        self.update_close_fees(&name);
    }

    /// The height at which every output of `name`'s close was resolved (0: not yet).
    fn close_height(&self, name: &str) -> u64 {
        let Some(acct) = self.account(name) else {
            return 0;
        };
        let Some(close) = acct.closed_event.and_then(|id| self.chain_event(id)) else {
            return 0;
        };
        let Some((sets, complete)) = self.txo_chain(name) else {
            return 0;
        };
        if !complete {
            return 0;
        }
        let counted = sets
            .iter()
            .find(|s| Some(&s.txid) == close.spending_txid.as_ref())
            .is_some_and(|s| s.pairs.len() == acct.closed_count as usize);
        if !counted {
            return 0;
        }
        self.chain
            .iter()
            .filter(|e| e.account == name && e.spending_txid.is_some())
            .map(|e| u64::from(e.blockheight))
            .max()
            .unwrap_or(0)
    }

    /// The fee of a channel's close: what the funding output held for us less what the
    /// close paid back to us.
    fn update_close_fees(&mut self, name: &str) {
        let Some(close) = self
            .account(name)
            .and_then(|a| a.closed_event)
            .and_then(|id| self.chain_event(id))
            .cloned()
        else {
            return;
        };
        let Some(txid) = close.spending_txid.clone() else {
            return;
        };
        let mut back = 0u64;
        for e in self.events_by_txid(&txid) {
            let fulfill = e.tag == "htlc_fulfill";
            if (is_channel(&e.account) && fulfill)
                || e.tag == "anchor"
                || (e.account == EXTERNAL && !fulfill)
            {
                continue;
            }
            back = back.saturating_add(e.credit);
        }
        if back <= close.debit {
            self.set_fee(name, &txid, close.debit - back, close.timestamp);
        }
    }

    /// The outputs of `txid` (only `account`'s when given), each paired with its spend.
    /// Also says whether anything is missing (no outputs, or a spend without its output).
    fn txo_set(&self, txid: &str, account: Option<&str>) -> (TxoSet<'_>, bool) {
        let mut evs: Vec<&ChainEvent> = self.chain.iter().filter(|e| e.txid == txid).collect();
        evs.sort_by(|a, b| {
            a.vout
                .cmp(&b.vout)
                .then(a.spending_txid.is_some().cmp(&b.spending_txid.is_some()))
                .then(a.spending_txid.cmp(&b.spending_txid))
                .then(a.blockheight.cmp(&b.blockheight))
        });
        let mut complete = !evs.is_empty();
        let mut pairs = Vec::new();
        let mut open: Option<TxoPair> = None;
        for ev in evs {
            if account.is_some_and(|a| a != ev.account) {
                continue;
            }
            if ev.spending_txid.is_some() {
                let mut pr = open.take().unwrap_or_else(|| {
                    complete = false;
                    TxoPair::default()
                });
                pr.spend = Some(ev);
                pairs.push(pr);
            } else {
                if let Some(pr) = open.take() {
                    // A proposed channel's output that never appeared is dropped.
                    if pr.txo.is_some_and(|t| t.tag != "channel_proposed") {
                        pairs.push(pr);
                    }
                }
                open = Some(TxoPair {
                    txo: Some(ev),
                    spend: None,
                });
            }
        }
        pairs.extend(open);
        (
            TxoSet {
                txid: txid.to_string(),
                pairs,
            },
            complete,
        )
    }

    /// The transactions of a channel from its funding on, following the spends of its
    /// outputs; and whether every channel output in them is resolved. None if the
    /// account has no opening move.
    pub fn txo_chain(&self, name: &str) -> Option<(Vec<TxoSet<'_>>, bool)> {
        let open = self
            .account(name)?
            .open_event
            .and_then(|id| self.chain_event(id))?;
        let mut txids = vec![open.txid.clone()];
        let mut sets = Vec::new();
        let mut complete = true;
        let mut i = 0;
        while i < txids.len() {
            let filter = (i == 0).then_some(open.account.as_str());
            let (set, set_complete) = self.txo_set(&txids[i], filter);
            complete &= set_complete;
            for pr in &set.pairs {
                if pr.txo.is_some_and(|t| is_channel(&t.account)) && pr.spend.is_none() {
                    complete = false;
                }
                if let Some(spend) = pr.spend
                    && let Some(next) = &spend.spending_txid
                    && spend.tag != "to_miner"
                    && !txids.contains(next)
                    && (spend.account == name || spend.stealable)
                {
                    txids.push(next.clone());
                }
            }
            sets.push(set);
            i += 1;
        }
        Some((sets, complete))
    }

    /// Credit and debit of an account over all its moves; None if it has none.
    pub fn balance(&self, name: &str) -> Option<(u64, u64)> {
        let mut any = false;
        let (mut credit, mut debit) = (0u64, 0u64);
        let chain = self.chain.iter().map(|e| (&e.account, e.credit, e.debit));
        let channel = self.channel.iter().map(|e| (&e.account, e.credit, e.debit));
        for (a, c, d) in chain.chain(channel) {
            if a == name {
                any = true;
                credit = credit.saturating_add(c);
                debit = debit.saturating_add(d);
            }
        }
        any.then_some((credit, debit))
    }

    /// Fee steps in `(start, end]`, by time.
    pub fn fees_between(&self, start: u64, end: u64) -> Vec<&OnchainFee> {
        let mut v: Vec<&OnchainFee> = self
            .fees
            .iter()
            .filter(|f| f.timestamp > start && f.timestamp <= end)
            .collect();
        v.sort_by_key(|f| f.timestamp);
        v
    }

    /// Fees per transaction and account, over the steps given.
    pub fn fee_sums<'a>(fees: impl IntoIterator<Item = &'a OnchainFee>) -> Vec<FeeSum> {
        let mut sums: Vec<FeeSum> = Vec::new();
        let mut net: Vec<i128> = Vec::new();
        for f in fees {
            let i = match sums
                .iter()
                .position(|s| s.txid == f.txid && s.account == f.account)
            {
                Some(i) => i,
                None => {
                    sums.push(FeeSum {
                        account: f.account.clone(),
                        txid: f.txid.clone(),
                        paid: 0,
                        last_timestamp: 0,
                    });
                    net.push(0);
                    sums.len() - 1
                }
            };
            net[i] += i128::from(f.credit) - i128::from(f.debit);
            sums[i].last_timestamp = sums[i].last_timestamp.max(f.timestamp);
        }
        for (s, n) in sums.iter_mut().zip(net) {
            s.paid = u64::try_from(n.max(0)).unwrap_or(u64::MAX);
        }
        sums.sort_by(|a, b| a.txid.cmp(&b.txid).then(a.account.cmp(&b.account)));
        sums
    }

    /// Whether some move of ours spent an output into `txid` (so outputs of it are
    /// transfers, not income).
    pub fn spent_into(&self, txid: &str) -> bool {
        self.chain
            .iter()
            .any(|e| e.spending_txid.as_deref() == Some(txid))
    }

    /// The description of a chain move (only credits carry one).
    pub fn chain_description(&self, e: &ChainEvent) -> Option<&str> {
        if e.credit == 0 {
            return None;
        }
        self.utxo_descriptions
            .get(&e.outpoint())
            .map(String::as_str)
    }

    /// The description of a channel move's payment.
    pub fn channel_description(&self, e: &ChannelEvent) -> Option<&str> {
        self.payment_descriptions
            .get(e.payment_id.as_ref()?)
            .map(String::as_str)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub const T1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    pub const T2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    pub const T3: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    pub const CHAN: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    pub const HASH: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[allow(clippy::too_many_arguments)]
    pub fn chain(
        id: u64,
        account: &str,
        tag: &str,
        credit: u64,
        debit: u64,
        utxo: &str,
        spending: Option<&str>,
        ts: u64,
    ) -> Value {
        let mut v = json!({
            "created_index": id, "account_id": account, "primary_tag": tag, "extra_tags": [],
            "credit_msat": credit, "debit_msat": debit, "output_msat": credit.max(debit),
            "timestamp": ts, "utxo": utxo, "blockheight": 101,
        });
        if let Some(s) = spending {
            v["spending_txid"] = json!(s);
        }
        v
    }

    pub fn channel(id: u64, tag: &str, credit: u64, debit: u64, fees: u64, ts: u64) -> Value {
        json!({"created_index": id, "account_id": CHAN, "primary_tag": tag,
               "credit_msat": credit, "debit_msat": debit, "fees_msat": fees,
               "payment_hash": HASH, "part_id": 0, "timestamp": ts})
    }

    /// Deposit 1,000,000 sat; open a 500,000 sat channel from it with 4,000 sat of fees.
    pub fn opened() -> Ledger {
        let mut l = Ledger::new();
        let moves = [
            chain(
                1,
                WALLET,
                "deposit",
                1_000_000_000,
                0,
                &format!("{T1}:0"),
                None,
                10,
            ),
            chain(
                2,
                WALLET,
                "withdrawal",
                0,
                1_000_000_000,
                &format!("{T1}:0"),
                Some(T2),
                20,
            ),
            chain(
                3,
                WALLET,
                "deposit",
                496_000_000,
                0,
                &format!("{T2}:1"),
                None,
                20,
            ),
        ];
        for m in &moves {
            l.add_chain_move(m).unwrap();
        }
        let mut open = chain(
            4,
            CHAN,
            "channel_open",
            500_000_000,
            0,
            &format!("{T2}:0"),
            None,
            20,
        );
        open["extra_tags"] = json!(["opener"]);
        open["peer_id"] =
            json!("02aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        l.add_chain_move(&open).unwrap();
        l
    }

    #[test]
    fn balances_follow_moves() {
        let l = opened();
        assert_eq!(l.balance(WALLET), Some((1_496_000_000, 1_000_000_000)));
        assert_eq!(l.balance(CHAN), Some((500_000_000, 0)));
        assert_eq!(l.balance(EXTERNAL), None);
        let a = l.account(CHAN).unwrap();
        assert!(a.we_opened);
        assert_eq!(a.open_event, Some(4));
        assert!(a.peer_id.is_some());
    }

    #[test]
    fn open_fee_goes_to_the_channel_not_the_wallet() {
        let l = opened();
        let sums: Vec<FeeSum> = Ledger::fee_sums(&l.fees)
            .into_iter()
            .filter(|s| s.paid > 0)
            .collect();
        assert_eq!(sums.len(), 1, "{:?}", l.fees);
        assert_eq!(sums[0].account, CHAN);
        assert_eq!(sums[0].txid, T2);
        assert_eq!(sums[0].paid, 4_000_000);
        // While only the wallet's side was known, the wallet was charged; then refunded.
        assert!(l.fees.iter().any(|f| f.account == WALLET && f.debit > 0));
        let wallet: u64 = Ledger::fee_sums(l.fees.iter().filter(|f| f.account == WALLET))
            .iter()
            .map(|s| s.paid)
            .sum();
        assert_eq!(wallet, 0);
    }

    #[test]
    fn moves_already_read_are_skipped() {
        let mut l = opened();
        let before = l.chain.len();
        l.add_chain_move(&chain(
            2,
            WALLET,
            "deposit",
            5,
            0,
            &format!("{T3}:0"),
            None,
            1,
        ))
        .unwrap();
        assert_eq!(l.chain.len(), before);
        assert_eq!(l.chain_index, 4);
    }

    #[test]
    fn rebalance_pairs_both_halves() {
        let mut l = opened();
        assert_eq!(
            l.add_channel_move(&channel(1, "invoice", 1000, 0, 0, 30))
                .unwrap(),
            Some(Lookup {
                payment_hash: HASH.into(),
                incoming: true
            })
        );
        l.add_channel_move(&channel(2, "invoice", 0, 1010, 10, 30))
            .unwrap();
        assert!(l.is_rebalance(1) && l.is_rebalance(2));
        l.add_channel_move(&channel(3, "invoice", 0, 500, 5, 31))
            .unwrap();
        assert!(!l.is_rebalance(3));
    }

    #[test]
    fn bad_moves_are_reported() {
        let mut l = Ledger::new();
        let err = l.add_chain_move(&json!({"created_index": 1})).unwrap_err();
        assert!(err.0.contains("utxo"), "{err}");
        let mut m = chain(1, WALLET, "deposit", 1, 0, "nottxid:0", None, 1);
        assert!(l.add_chain_move(&m).is_err());
        m["utxo"] = json!(format!("{T1}:0"));
        m["credit_msat"] = json!("7msat");
        l.add_chain_move(&m).unwrap();
        assert_eq!(l.chain[0].credit, 7);
    }

    #[test]
    fn mutual_close_resolves_and_charges_the_channel() {
        let mut l = opened();
        let mut close = chain(
            5,
            CHAN,
            "channel_close",
            0,
            500_000_000,
            &format!("{T2}:0"),
            Some(T3),
            40,
        );
        close["output_count"] = json!(1);
        close["blockheight"] = json!(120);
        l.add_chain_move(&close).unwrap();
        // The close's output is not known yet.
        assert_eq!(l.account(CHAN).unwrap().resolved_block, None);
        let mut back = chain(
            6,
            WALLET,
            "deposit",
            497_000_000,
            0,
            &format!("{T3}:0"),
            None,
            41,
        );
        back["blockheight"] = json!(120);
        l.add_chain_move(&back).unwrap();
        assert_eq!(l.account(CHAN).unwrap().resolved_block, Some(120));
        let close_fee: Vec<_> = Ledger::fee_sums(&l.fees)
            .into_iter()
            .filter(|s| s.txid == T3)
            .collect();
        assert_eq!(close_fee.len(), 1, "{:?}", l.fees);
        assert_eq!(close_fee[0].account, CHAN);
        assert_eq!(close_fee[0].paid, 3_000_000);
    }
}
