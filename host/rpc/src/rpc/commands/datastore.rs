//! `datastore`, `listdatastore`, `deldatastore`: the plugins' persistent key-value store,
//! in the node's SQLite database, with CLN's modes, generations and error codes.

use fulgur_protocol::RpcError;
use fulgur_protocol::error::codes;
use serde_json::{Map, Value, json};

use super::{Command, CommandFuture, Ctx, command};
use crate::rpc::params::{Params, opt, req};
use crate::store::StoreError;
use crate::store::datastore::{self, DsError, Entry, Mode};

pub const DATASTORE: Command = Command::new(
    "datastore",
    &[
        req("key"),
        opt("string"),
        opt("hex"),
        opt("mode"),
        opt("generation"),
    ],
    run_datastore,
);

pub const LISTDATASTORE: Command = Command::new("listdatastore", &[opt("key")], run_list);

pub const DATASTOREUSAGE: Command = Command::new("datastoreusage", &[opt("key")], run_usage);

pub const DELDATASTORE: Command =
    Command::new("deldatastore", &[req("key"), opt("generation")], run_del);

pub(super) fn key(p: &Params, required: bool) -> Result<Vec<String>, RpcError> {
    let bad = || RpcError::invalid_params("key: should be a string or an array of strings");
    let k: Vec<String> = match p.get("key") {
        None if required => {
            return Err(RpcError::invalid_params("missing required parameter: key"));
        }
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|x| x.as_str().map(String::from).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if required && k.is_empty() {
        return Err(RpcError::invalid_params("key: must not be empty"));
    }
    if k.iter().any(|s| s.contains('\0')) {
        return Err(RpcError::invalid_params(
            "key: must not contain NUL characters",
        ));
    }
    Ok(k)
}

fn finish(r: Result<Result<Value, DsError>, StoreError>) -> Result<Value, RpcError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refusal(e)),
        Err(e) => Err(RpcError::lightningd(e.to_string())),
    }
}

/// CLN's code and message for each refusal.
fn refusal(e: DsError) -> RpcError {
    let (code, msg) = match e {
        DsError::ParentHasData(parent) => (
            codes::DATASTORE_UPDATE_NO_CHILDREN,
            format!("Parent key {} exists", json!(parent)),
        ),
        DsError::HasChildren => (
            codes::DATASTORE_UPDATE_HAS_CHILDREN,
            "Key has children".into(),
        ),
        DsError::AlreadyExists => (
            codes::DATASTORE_UPDATE_ALREADY_EXISTS,
            "Key already exists".into(),
        ),
        DsError::DoesNotExist => (
            codes::DATASTORE_UPDATE_DOES_NOT_EXIST,
            "Key does not exist".into(),
        ),
        DsError::WrongGeneration => (
            codes::DATASTORE_UPDATE_WRONG_GENERATION,
            "generation is different".into(),
        ),
        DsError::DelDoesNotExist => (
            codes::DATASTORE_DEL_DOES_NOT_EXIST,
            "Key does not exist".into(),
        ),
        DsError::DelWrongGeneration => (
            codes::DATASTORE_DEL_WRONG_GENERATION,
            "generation is different".into(),
        ),
        DsError::Store(e) => return RpcError::lightningd(e.to_string()),
    };
    RpcError::new(code, msg)
}

/// CLN's form of an entry: `key`, and with data `generation`, `hex` and `string` (if UTF-8).
fn entry_json(e: &Entry) -> Value {
    let mut m = Map::new();
    m.insert("key".into(), json!(e.key));
    if let Some((data, generation)) = &e.data {
        m.insert("generation".into(), json!(generation));
        m.insert("hex".into(), json!(fulgur_base::hex(data)));
        if let Ok(s) = std::str::from_utf8(data) {
            m.insert("string".into(), json!(s));
        }
    }
    Value::Object(m)
}

fn run_datastore(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let parsed = (|| -> Result<_, RpcError> {
            let key = key(&p, true)?;
            let data = match (p.opt_str("string")?, p.opt_str("hex")?) {
                (Some(_), Some(_)) => {
                    return Err(RpcError::invalid_params("Cannot have both hex and string"));
                }
                (Some(s), None) => s.into_bytes(),
                (None, Some(h)) => fulgur_base::unhex(&h)
                    .ok_or_else(|| RpcError::invalid_params("hex: should be a hex string"))?,
                (None, None) => {
                    return Err(RpcError::invalid_params("Must have either hex or string"));
                }
            };
            let mode = match p.opt_str("mode")? {
                None => Mode::MustCreate,
                Some(m) => Mode::parse(&m).ok_or_else(|| RpcError::invalid_params(format!("mode: should be one of must-create, must-replace, create-or-replace, must-append, create-or-append: invalid token '{m}'")))?,
            };
            let generation = p.opt_u64("generation")?;
            if generation.is_some() && !matches!(mode, Mode::MustReplace | Mode::MustAppend) {
                return Err(RpcError::invalid_params(
                    "generation only valid with must-replace or must-append",
                ));
            }
            Ok((key, data, mode, generation))
        })();
        let (key, data, mode, generation) = parsed?;
        finish(
            ctx.node
                .store
                .with(move |c| {
                    Ok(datastore::put(c, &key, &data, mode, generation).map(|e| entry_json(&e)))
                })
                .await,
        )
    })
}

fn run_list(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let key = key(&p, false)?;
        finish(
            ctx.node
                .store
                .with(move |c| {
                    Ok(datastore::list(c, &key).map(
                        |es| json!({"datastore": es.iter().map(entry_json).collect::<Vec<_>>()}),
                    ))
                })
                .await,
        )
    })
}

fn run_del(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let (key, generation) = key(&p, true).and_then(|k| Ok((k, p.opt_u64("generation")?)))?;
        finish(
            ctx.node
                .store
                .with(move |c| Ok(datastore::delete(c, &key, generation).map(|e| entry_json(&e))))
                .await,
        )
    })
}

/// `datastoreusage`: the bytes under a key (all of the datastore without one), with the key
/// as CLN prints it (`[a,b]`).
fn run_usage(ctx: Ctx, p: Params) -> CommandFuture {
    command(async move {
        let mut key = key(&p, false)?;
        // CLN ignores an empty key string or array.
        if key.first().is_some_and(|k| k.is_empty()) {
            key.clear();
        }
        let shown = format!("[{}]", key.join(","));
        finish(
            ctx.node
                .store
                .with(move |c| {
                    Ok(datastore::usage(c, &key).map(
                        |total| json!({"datastoreusage": {"key": shown, "total_bytes": total}}),
                    ))
                })
                .await,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_refusals_in_clns_form() {
        let e = Entry {
            key: vec!["p".into(), "q".into()],
            data: Some((vec![0xff, 0x00], 3)),
        };
        assert_eq!(
            entry_json(&e),
            json!({"key": ["p", "q"], "generation": 3, "hex": "ff00"})
        );
        let r = refusal(DsError::ParentHasData(vec!["a".into(), "b".into()]));
        assert_eq!(
            (r.code, r.message.as_str()),
            (1206, r#"Parent key ["a","b"] exists"#)
        );
        assert_eq!(refusal(DsError::DelDoesNotExist).code, 1200);
        assert_eq!(refusal(DsError::WrongGeneration).code, 1204);
    }
}
