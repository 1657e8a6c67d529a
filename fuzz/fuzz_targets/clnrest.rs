#![no_main]
//! What an HTTP client sends the `clnrest` plugin (`plugins/clnrest/src/lib.rs`), before
//! any rune is checked: the path and method it asks for (against a router holding
//! registered paths), the body in the format its `Content-Type` names, the `Accept` it
//! wants the reply in; and what a plugin gives `clnrest-register-path`. A panic is a bug;
//! so is a route found for a path that is neither registered nor `v1/<method>`, a status
//! outside CLN's, or params that lose a path capture.

use fulgur_plugin_clnrest::{
    DynRouter, Format, Method, Route, body_params, register, register_path_args, render, resolve,
};
use serde_json::Value;

const TYPES: [&str; 6] = [
    "application/json",
    "application/yaml",
    "application/xml",
    "application/x-www-form-urlencoded",
    "*/*",
    "text/plain",
];
const METHODS: [Method; 5] = [
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
];

fn router() -> DynRouter {
    let mut r = DynRouter::new();
    let route = |m: &str| Route {
        rpc_method: m.into(),
        rune_required: true,
        rune_restrictions: None,
    };
    let _ = register(&mut r, "v{version}/{capture}/go", Method::Get, route("cap"));
    let _ = register(&mut r, "shop/item", Method::Post, route("one"));
    r
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let [mode, sel, rest @ ..] = data else {
        return;
    };
    let method = METHODS[usize::from(*sel) % METHODS.len()];
    let content_type = TYPES[usize::from(*sel / 8) % TYPES.len()];
    match mode % 3 {
        0 => {
            // A request: the first line is the path, the rest the body.
            let (path, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            let Ok(path) = std::str::from_utf8(path) else {
                return;
            };
            let r = router();
            match resolve(&r, path, method) {
                Ok((route, mut params)) => {
                    assert!(
                        path.starts_with("v1/") || r.at(path).is_ok(),
                        "{path} routed to {}",
                        route.rpc_method
                    );
                    let captured = params.len();
                    match body_params(&mut params, Some(content_type), &route.rpc_method, body) {
                        Ok(()) => {
                            assert!(params.len() >= captured);
                            assert!(Format::from_header(content_type).is_some());
                            let check = route.rune_check(&params).into_checkrune("r");
                            assert_eq!(check.get("params"), Some(&Value::Object(params)));
                        }
                        Err(e) => assert!([406, 500].contains(&e.status), "{e:?}"),
                    }
                }
                Err(e) => assert!([404, 405].contains(&e.status), "{e:?}"),
            }
        }
        1 => {
            // A reply rendered in every format the client may accept.
            let Ok(v) = serde_json::from_slice::<Value>(rest) else {
                return;
            };
            match render(Some(content_type), "method", &v) {
                Ok((ct, bytes)) => {
                    assert!(TYPES.contains(&ct) || ct == "application/json");
                    if ct == "application/json" {
                        assert_eq!(serde_json::from_slice::<Value>(&bytes).ok(), Some(v));
                    }
                }
                Err(e) => assert!([406, 500].contains(&e.status), "{e:?}"),
            }
        }
        _ => {
            // clnrest-register-path's params, then the registration itself.
            let Ok(args) = serde_json::from_slice::<Value>(rest) else {
                return;
            };
            if let Ok((path, m, route)) = register_path_args(&args) {
                assert!(m == Method::Get || route.rune_required);
                let mut r = router();
                if register(&mut r, &path, m, route.clone()).is_ok() {
                    let trimmed = path.trim_matches('/');
                    assert!(!trimmed.is_empty() && !trimmed.contains("{*"));
                }
            }
        }
    }
});
