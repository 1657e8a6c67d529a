//! The node's runes, as CLN's `createrune`, `checkrune`, `showrunes` and `blacklistrune`
//! keep them: the master rune (from `hsm_secret`, the secret CLN derives for "commando"),
//! the next unique id, the blacklist, and each created rune's row with when it last passed a
//! check (for `per` and `rate`). The format and the evaluation are [`crate::runes`]; the RPC
//! reads parameters and writes CLN's JSON. Nothing here is a JSON value.
//!
//! One lock orders every change: creating (the id counter), checking (a `per`/`rate` check
//! and the use it records happen together, so two calls cannot both pass a limit of one)
//! and blacklisting.

use tokio::sync::Mutex;

use crate::runes::{Blacklist, MAX_BLACKLIST, ParamFields, Request, Restriction, Rune};
use crate::store::runes as rows;
use crate::store::{Store, StoreError};

/// The node's runes.
pub struct RuneBook {
    master: Rune,
    store: Store,
    state: Mutex<State>,
}

struct State {
    next_id: u64,
    blacklist: Blacklist,
}

/// Why `checkrune` refuses a rune.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Its unique id is blacklisted (CLN's `RUNE_BLACKLISTED`).
    Blacklisted,
    /// It is not derived from the node's master rune: CLN's reason (`RUNE_NOT_AUTHORIZED`).
    NotAuthorized(&'static str),
    /// A restriction is not met: CLN's reason in its English (`RUNE_NOT_PERMITTED`).
    NotPermitted(String),
}

/// What a `checkrune` call asks about.
pub struct Check<'a> {
    /// The caller's node id (hex), if given.
    pub peer: Option<&'a str>,
    /// The method, if given.
    pub method: Option<&'a str>,
    /// How many parameters the method is given.
    pub pnum: i64,
    /// The parameters as fields.
    pub params: &'a dyn ParamFields,
    /// Now, in nanoseconds since 1970.
    pub now_nanos: u64,
}

/// One rune as `showrunes` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownRune {
    /// Its text.
    pub text: String,
    /// The rune.
    pub rune: Rune,
    /// Whether exactly this text is stored under its unique id.
    pub stored: bool,
    /// Whether its unique id is blacklisted.
    pub blacklisted: bool,
    /// Whether it derives from the node's master rune.
    pub ours: bool,
    /// When the rune stored under its unique id last passed a check (nanoseconds).
    pub last_used_nanos: Option<u64>,
}

impl RuneBook {
    /// The node's runes: the master rune of `secret` and the state kept in `store`.
    pub async fn load(store: Store, secret: [u8; 32]) -> Result<RuneBook, StoreError> {
        let (next_id, ranges) = store
            .with(|c| Ok((rows::next_id(c)?, rows::blacklist(c)?)))
            .await?;
        Ok(RuneBook {
            master: Rune::master(&secret),
            store,
            state: Mutex::new(State {
                next_id,
                blacklist: Blacklist::from_ranges(&ranges),
            }),
        })
    }

    /// Whether `rune` derives from the node's master rune (`Err`: CLN's reason).
    pub fn is_ours(&self, rune: &Rune) -> Result<(), &'static str> {
        rune.is_derived_from(&self.master)
    }

    /// `createrune` without a rune: a new rune with the next unique id and `restrictions`,
    /// stored. Refused (`Ok(Err)`) when a restriction is empty or an id.
    pub async fn create(
        &self,
        restrictions: Vec<Restriction>,
    ) -> Result<Result<Rune, crate::runes::FormatError>, StoreError> {
        let mut state = self.state.lock().await;
        let id = state.next_id;
        let mut rune = self.master.derive(id);
        for r in restrictions {
            if let Err(e) = rune.add_restriction(r) {
                return Ok(Err(e));
            }
        }
        let text = rune.to_base64();
        self.store.with(move |c| rows::insert(c, id, &text)).await?;
        state.next_id = id + 1;
        Ok(Ok(rune))
    }

    fn blacklisted(state: &State, rune: &Rune) -> bool {
        rune.unique_id_num()
            .is_some_and(|id| id < MAX_BLACKLIST && state.blacklist.contains(id))
    }

    /// `checkrune`: whether `rune` may run `check`'s call; a rune that passes is recorded as
    /// used now (if it is stored).
    pub async fn check(
        &self,
        rune: &Rune,
        check: Check<'_>,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let state = self.state.lock().await;
        if Self::blacklisted(&state, rune) {
            return Ok(Err(Refusal::Blacklisted));
        }
        if let Err(why) = self.is_ours(rune) {
            return Ok(Err(Refusal::NotAuthorized(why)));
        }
        let id = rune.unique_id_num();
        let last_used_nanos = match id {
            Some(id) => self
                .store
                .with(move |c| rows::get(c, id))
                .await?
                .and_then(|r| r.last_used_nanos),
            None => None,
        };
        let request = Request {
            now_nanos: check.now_nanos,
            peer: check.peer,
            method: check.method,
            pnum: check.pnum,
            last_used_nanos,
            params: check.params,
        };
        if let Some(why) = rune.test(|alt| request.check(alt)) {
            return Ok(Err(Refusal::NotPermitted(crate::runes::anglicise(&why))));
        }
        if let Some(id) = id {
            let now = check.now_nanos;
            self.store
                .with(move |c| rows::set_last_used(c, id, now))
                .await?;
        }
        drop(state);
        Ok(Ok(()))
    }

    /// `showrunes`: the rune given (`text`, read as `rune`), or every stored rune.
    pub async fn show(&self, given: Option<(String, Rune)>) -> Result<Vec<ShownRune>, StoreError> {
        let state = self.state.lock().await;
        let describe = |text: String, rune: Rune, stored: bool, last_used_nanos| ShownRune {
            blacklisted: Self::blacklisted(&state, &rune),
            ours: self.is_ours(&rune).is_ok(),
            text,
            rune,
            stored,
            last_used_nanos,
        };
        match given {
            Some((text, rune)) => {
                let row = match rune.unique_id_num() {
                    Some(id) => self.store.with(move |c| rows::get(c, id)).await?,
                    None => None,
                };
                let stored = row.as_ref().is_some_and(|r| r.rune == text);
                let last_used = row.and_then(|r| r.last_used_nanos);
                Ok(vec![describe(text, rune, stored, last_used)])
            }
            None => {
                let all = self.store.with(|c| rows::list(c)).await?;
                Ok(all
                    .into_iter()
                    .filter_map(|row| {
                        // Only runes we wrote are stored; one that does not read back
                        // cannot be described.
                        let rune = Rune::from_base64(&row.rune).ok()?;
                        Some(describe(row.rune, rune, true, row.last_used_nanos))
                    })
                    .collect())
            }
        }
    }

    /// `blacklistrune`: with a range, blacklists it (or, with `relist`, takes it off the
    /// list) and saves the list; the ranges either way. Ids must be below
    /// [`MAX_BLACKLIST`] (the RPC checks).
    pub async fn blacklist(
        &self,
        change: Option<(u64, u64, bool)>,
    ) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut state = self.state.lock().await;
        let Some((start, end, relist)) = change else {
            return Ok(state.blacklist.ranges().to_vec());
        };
        let mut list = state.blacklist.clone();
        if relist {
            list.remove(start, end);
        } else {
            list.add(start, end);
        }
        let ranges = list.ranges().to_vec();
        let saved = ranges.clone();
        self.store
            .with(move |c| rows::set_blacklist(c, &saved))
            .await?;
        state.blacklist = list;
        Ok(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runes::{Alternative, FieldValue};

    struct NoParams;
    impl ParamFields for NoParams {
        fn field(&self, _: &Alternative) -> Result<FieldValue, String> {
            Ok(FieldValue::Missing)
        }
    }

    fn ok<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn call(method: &str, now_nanos: u64) -> Check<'_> {
        Check {
            peer: None,
            method: Some(method),
            pnum: 0,
            params: &NoParams,
            now_nanos,
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn created_runes_are_numbered_checked_rate_limited_and_blacklisted() {
        let store = ok(Store::in_memory());
        let book = ok(RuneBook::load(store.clone(), [3; 32]).await);
        let r0 = ok(ok(book.create(vec![]).await));
        let limited = vec![
            ok(Restriction::parse("method=getinfo")),
            ok(Restriction::parse("per=1sec")),
        ];
        let r1 = ok(ok(book.create(limited).await));
        assert_eq!((r0.unique_id(), r1.unique_id()), (Some("0"), Some("1")));

        let s = 1_000_000_000;
        assert_eq!(ok(book.check(&r1, call("getinfo", 10 * s)).await), Ok(()));
        assert_eq!(
            ok(book.check(&r1, call("getinfo", 10 * s + s / 2)).await),
            Err(Refusal::NotPermitted("too soon".into()))
        );
        assert_eq!(ok(book.check(&r1, call("getinfo", 11 * s)).await), Ok(()));
        assert_eq!(
            ok(book.check(&r1, call("pay", 20 * s)).await),
            Err(Refusal::NotPermitted(
                "method is not equal to getinfo".into()
            ))
        );
        let shown = ok(book.show(Some((r1.to_base64(), r1.clone()))).await);
        assert_eq!(shown[0].last_used_nanos, Some(11 * s));
        assert!(shown[0].stored && shown[0].ours && !shown[0].blacklisted);

        let foreign = Rune::master(&[4; 32]).derive(0);
        assert_eq!(
            ok(book.check(&foreign, call("getinfo", 30 * s)).await),
            Err(Refusal::NotAuthorized("Not derived from master"))
        );

        assert_eq!(ok(book.blacklist(Some((1, 1, false))).await), vec![(1, 1)]);
        assert_eq!(
            ok(book.check(&r1, call("getinfo", 40 * s)).await),
            Err(Refusal::Blacklisted)
        );
        assert_eq!(ok(book.check(&r0, call("anything", 40 * s)).await), Ok(()));

        // A restart reads the same state back.
        let again = ok(RuneBook::load(store, [3; 32]).await);
        assert_eq!(ok(again.blacklist(None).await), vec![(1, 1)]);
        let r2 = ok(ok(again.create(vec![]).await));
        assert_eq!(r2.unique_id(), Some("2"));
        let all = ok(again.show(None).await);
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].text, r1.to_base64());
        assert!(all[1].blacklisted);
    }
}
