//! `clnrest`, CLN's REST plugin of that name: every RPC command as `POST /v1/<command>`
//! over HTTPS (or HTTP), authorised by the rune in the `Rune` header, notifications pushed
//! to Socket.IO clients, paths added by plugins with `clnrest-register-path`, and a Swagger
//! page. Off unless `clnrest-port` is set, as in CLN.
//!
//! Each request: the route is found (a registered path, else `v1/<method>`), the body is
//! read as params (JSON, YAML, XML or a form), the rune is checked with `checkrune` for
//! that method and those params, then the method runs over the node's RPC socket. The
//! statuses are CLN's: 201 with the result, 403 without a rune, 401 when `checkrune`
//! refuses it, 404 for an unknown command, 405 for a method the path does not take, 406
//! for a format clnrest does not speak or a duplicate key, 500 when the command fails.
//!
//! Socket.IO clients connect with a rune in their headers that allows
//! `listclnrest-notifications`; each notification the node sends (every topic but `log`)
//! is emitted to them as a `message` event carrying `{"<topic>": payload}`, as CLN's.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{any, get};
use axum_server::accept::NoDelayAcceptor;
use fulgur_plugin_clnrest::{
    DynRouter, Method, RestError, RuneCheck, body_params, certs, drop_null_members, drop_nulls,
    list_methods, openapi, register, register_path_args, render, resolve,
};
use fulgur_plugin_sdk::{
    Builder, CallError, Configured, Event, Level, OptionSpec, Plugin, RpcError, RpcMethod,
};
use serde_json::{Map, Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::handler::ConnectHandler;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

const DEFAULT_CSP: &str = "default-src 'self'; font-src 'self'; img-src 'self' data:; \
    frame-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline';";
const SWAGGER_FALLBACK: &str = "/swagger-ui";
/// The method a Socket.IO client's rune must allow.
const NOTIFICATIONS_METHOD: &str = "listclnrest-notifications";

struct Shared {
    dynamic: Mutex<DynRouter>,
    /// Set once the server runs; notifications before that have no listener.
    io: Mutex<Option<SocketIo>>,
}

type P = Plugin<Arc<Shared>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

enum Protocol {
    Https,
    Http,
}

struct Options {
    address: SocketAddr,
    /// `host:port` as configured, for the "running at" line.
    shown: String,
    host: String,
    protocol: Protocol,
    certs: PathBuf,
    cors: CorsLayer,
    csp: HeaderValue,
    swagger: String,
}

/// Reads the options, with CLN's refusals (the plugin disables itself with that text).
fn options(c: &Configured<Arc<Shared>>) -> Result<Options, String> {
    let s = |name: &str| c.option(name).and_then(Value::as_str).map(str::to_owned);
    let Some(port) = c.option("clnrest-port").and_then(Value::as_i64) else {
        return Err("`clnrest-port` option is not configured".into());
    };
    if !(1024..=65535).contains(&port) {
        return Err(format!(
            "`clnrest-port` {port}, should be a valid available port between 1024 and 65535."
        ));
    }
    let protocol = match s("clnrest-protocol").unwrap_or_else(|| "https".into()) {
        p if p.eq_ignore_ascii_case("https") => Protocol::Https,
        p if p.eq_ignore_ascii_case("http") => Protocol::Http,
        _ => return Err("`clnrest-protocol` can either be http or https.".into()),
    };
    let host = s("clnrest-host").unwrap_or_else(|| "127.0.0.1".into());
    let shown = format!("{host}:{port}");
    let address = if host == "localhost" {
        shown
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or("No address found for localhost")?
    } else {
        shown
            .parse()
            .map_err(|_| "`clnrest-host` should be a valid IP.")?
    };
    let origins: Vec<String> = match c.option("clnrest-cors-origins") {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Into::into).collect(),
        Some(Value::String(v)) => vec![v.clone()],
        _ => vec!["*".into()],
    };
    let cors = cors_layer(&origins)?;
    let csp_text = s("clnrest-csp").unwrap_or_else(|| DEFAULT_CSP.into());
    let csp = HeaderValue::from_str(&csp_text)
        .map_err(|e| format!("`clnrest-csp` is not a valid header value: {e}"))?;
    let swagger = s("clnrest-swagger-root").unwrap_or_else(|| "/".into());
    if !swagger.starts_with('/') {
        return Err("`clnrest-swagger-root` must start with `/`".into());
    }
    let certs = match s("clnrest-certs") {
        Some(p) => PathBuf::from(p),
        // The plugin runs in the network directory, as CLN's: the files sit beside
        // lightning-rpc, where cln-grpc keeps its own.
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    Ok(Options {
        address,
        shown,
        host,
        protocol,
        certs,
        cors,
        csp,
        swagger,
    })
}

fn cors_layer(origins: &[String]) -> Result<CorsLayer, String> {
    let layer = CorsLayer::new().allow_methods(Any).allow_headers(Any);
    match origins.first().map(String::as_str) {
        None => Err("`clnrest-cors-origins` must not be empty!".into()),
        Some("*") => Ok(layer.allow_origin(Any)),
        Some(_) => {
            let list = origins
                .iter()
                .map(|o| {
                    HeaderValue::from_str(o)
                        .map_err(|e| format!("Could not parse CORS header value `{o}`: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(layer.allow_origin(AllowOrigin::list(list)))
        }
    }
}

/// A node error as clnrest's: the node's code and message.
fn rpc_error(e: CallError) -> RestError {
    match e {
        CallError::Rpc(r) => RestError::from_rpc(r.code, r.message, r.data),
        other => RestError::new(500, None, other.to_string()),
    }
}

/// CLN's rune check: 403 without a rune, 401 when `checkrune` refuses it.
async fn check_rune(plugin: &P, rune: Option<&str>, check: RuneCheck) -> Result<(), RestError> {
    // For the log: what the rune was asked for (the params are moved into the call).
    let asked = format!(
        "method: `{}`{}",
        check.method.as_deref().unwrap_or_default(),
        check
            .nodeid
            .as_deref()
            .map(|n| format!(", nodeid: `{n}`"))
            .unwrap_or_default()
    );
    let refused = |status: u16, mut e: RestError| {
        e.status = status;
        plugin.info(format!("verify_rune failed: {asked} {e}"));
        e
    };
    let Some(rune) = rune else {
        let missing = RestError::new(403, Some(1501), "Not authorized: Missing rune");
        return Err(refused(403, missing));
    };
    let r = plugin
        .rpc()
        .call("checkrune", check.into_checkrune(rune))
        .await
        .map_err(|e| refused(401, rpc_error(e)))?;
    if r.get("valid").and_then(Value::as_bool) != Some(true) {
        let invalid = RestError::new(401, Some(1502), "Rune is not valid");
        return Err(refused(401, invalid));
    }
    Ok(())
}

fn error_response(e: RestError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(e.body())).into_response()
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Every request but the fixed pages: find the route, read the params, check the rune,
/// run the method.
async fn call(
    State(plugin): State<P>,
    method: axum::http::Method,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(&plugin, method, &path, &headers, &body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn serve(
    plugin: &P,
    http_method: axum::http::Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RestError> {
    let Some(method) = Method::parse(http_method.as_str()) else {
        return Err(RestError::new(
            405,
            Some(-32601),
            format!("Unsupported http method: {http_method}"),
        ));
    };
    let (route, mut params) = resolve(&lock(&plugin.state().dynamic), path, method)?;
    body_params(
        &mut params,
        header_str(headers, "content-type"),
        &route.rpc_method,
        body,
    )?;
    drop_null_members(&mut params);
    if route.rune_required || method != Method::Get {
        check_rune(
            plugin,
            header_str(headers, "rune"),
            route.rune_check(&params),
        )
        .await?;
    }
    let result = plugin
        .rpc()
        .call(&route.rpc_method, Value::Object(params))
        .await
        .map_err(rpc_error)?;
    let (content_type, body) = render(header_str(headers, "accept"), &route.rpc_method, &result)?;
    Ok((
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, content_type)],
        body,
    )
        .into_response())
}

/// The node's `help`, or the 500 page saying why not.
async fn help(plugin: &P) -> Result<Value, Response> {
    plugin.rpc().call("help", json!({})).await.map_err(|e| {
        error_response(RestError::new(
            500,
            None,
            format!("Error calling help rpc: {e}"),
        ))
    })
}

async fn methods_page(State(plugin): State<P>) -> Response {
    match help(&plugin).await {
        Ok(help) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            list_methods(&help),
        )
            .into_response(),
        Err(page) => page,
    }
}

async fn swagger_json(State(plugin): State<P>) -> Response {
    let help = match help(&plugin).await {
        Ok(h) => h,
        Err(page) => return page,
    };
    let version = plugin
        .rpc()
        .call("getinfo", json!({}))
        .await
        .ok()
        .and_then(|i| i.get("version").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    axum::Json(openapi::document(&help, &version)).into_response()
}

/// Socket.IO connections: the rune in the request's headers must allow
/// `listclnrest-notifications`; the refusal reaches the client as its connect error.
async fn auth_socket(
    socket: SocketRef,
    socketioxide::extract::State(plugin): socketioxide::extract::State<P>,
) -> Result<(), RestError> {
    let check = RuneCheck {
        method: Some(NOTIFICATIONS_METHOD.into()),
        ..Default::default()
    };
    check_rune(
        &plugin,
        header_str(&socket.req_parts().headers, "rune"),
        check,
    )
    .await
}

async fn on_connect(
    socket: SocketRef,
    socketioxide::extract::State(plugin): socketioxide::extract::State<P>,
) {
    plugin.info(format!(
        "Socket.IO connected: {} {}",
        socket.ns(),
        socket.id
    ));
}

async fn notification(plugin: P, event: Event) {
    let Some(io) = lock(&plugin.state().io).clone() else {
        return;
    };
    let mut body = Map::new();
    body.insert(event.topic.clone(), event.payload);
    if let Some(origin) = event.origin {
        body.insert("origin".into(), json!(origin));
    }
    if let Err(e) = io.emit("message", &Value::Object(body)).await {
        plugin.debug(format!("Could not emit notification: {e}"));
    }
}

async fn register_path(plugin: P, args: Value) -> Result<Value, RpcError> {
    let mut args = args;
    drop_nulls(&mut args);
    let (path, method, route) = register_path_args(&args).map_err(RpcError::invalid_params)?;
    let shown = format!(
        "rpc_method: {} with rune_required:{} and rune_restrictions:{}",
        route.rpc_method,
        route.rune_required,
        serde_json::to_string(&route.rune_restrictions.clone().unwrap_or_default())
            .unwrap_or_default()
    );
    register(&mut lock(&plugin.state().dynamic), &path, method, route)
        .map_err(RpcError::invalid_params)?;
    plugin.debug(format!(
        "Registered path: {} with http_method: {} to {shown}",
        path.trim_matches('/'),
        method.as_str()
    ));
    Ok(json!({}))
}

async fn run_server(plugin: P, o: Options) -> Result<(), String> {
    let (io_layer, io) = SocketIo::builder().with_state(plugin.clone()).build_layer();
    io.ns("/", on_connect.with(auth_socket));
    *lock(&plugin.state().io) = Some(io);

    let swagger_path = if o.swagger == "/" {
        SWAGGER_FALLBACK.to_owned()
    } else {
        o.swagger.clone()
    };
    let swagger: Router<()> = utoipa_swagger_ui::SwaggerUi::new(swagger_path.clone())
        .config(utoipa_swagger_ui::Config::from("/swagger.json"))
        .into();
    let redirect_root = o.swagger == "/";
    let app = Router::new()
        .route(
            "/",
            get(move || async move {
                if redirect_root {
                    Redirect::permanent(SWAGGER_FALLBACK).into_response()
                } else {
                    "Hello, World!".into_response()
                }
            }),
        )
        .route("/swagger.json", get(swagger_json))
        .route("/v1/list-methods", get(methods_page))
        .route("/{*path}", any(call))
        .with_state(plugin.clone())
        .merge(swagger)
        .layer(o.cors)
        .layer(SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("content-security-policy"),
            o.csp,
        ))
        .layer(io_layer);
    let service = app.into_make_service();

    // TCP_NODELAY on every connection: under Nagle's algorithm a reply written while an
    // earlier small segment (TLS session tickets, HTTP/2 settings, a reply's head) is not
    // yet acknowledged waits for the client's delayed ACK, 40 ms on Linux: most HTTPS
    // requests on a new connection took 44 ms instead of 3 (docs/PERFORMANCE.md).
    match o.protocol {
        Protocol::Https => {
            // cln-grpc may be writing the same files right now: give it a moment.
            let mut tries = 0;
            while !certs::complete(&o.certs) && o.certs.join("ca.pem").exists() && tries < 10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tries += 1;
            }
            if !certs::complete(&o.certs) {
                plugin.debug("Certificates incomplete: generating new ones");
                certs::generate(&o.certs, &o.host)?;
            }
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(
                o.certs.join("server.pem"),
                o.certs.join("server-key.pem"),
            )
            .await
            .map_err(|e| format!("cannot load the TLS certificate: {e}"))?;
            let listener = std::net::TcpListener::bind(o.address)
                .map_err(|e| format!("cannot listen on {}: {e}", o.shown))?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            plugin.info(format!("REST server running at https://{}", o.shown));
            axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| e.to_string())?
                .map(|tls| tls.acceptor(NoDelayAcceptor::new()))
                .serve(service)
                .await
                .map_err(|e| e.to_string())
        }
        Protocol::Http => {
            let listener = std::net::TcpListener::bind(o.address)
                .map_err(|e| format!("cannot listen on {}: {e}", o.shown))?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            plugin.info(format!("REST server running at http://{}", o.shown));
            axum_server::from_tcp(listener)
                .map_err(|e| e.to_string())?
                .acceptor(NoDelayAcceptor::new())
                .serve(service)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // ring, not aws-lc-rs: no C/CMake build (rustls marks ring's provider deprecated
    // because it has no post-quantum key exchange; the server is on loopback by default).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let state = Arc::new(Shared {
        dynamic: Mutex::new(DynRouter::new()),
        io: Mutex::new(None),
    });
    let builder = Builder::<Arc<Shared>>::new()
        .option(OptionSpec::int(
            "clnrest-port",
            "REST server port to listen",
        ))
        .option(OptionSpec::string(
            "clnrest-certs",
            "Path for certificates (for https)",
        ))
        .option(OptionSpec::string("clnrest-protocol", "REST server protocol").default("https"))
        .option(OptionSpec::string("clnrest-host", "REST server host").default("127.0.0.1"))
        .option(
            OptionSpec::string(
                "clnrest-cors-origins",
                "Cross origin resource sharing origins",
            )
            .default("*")
            .multi(),
        )
        .option(
            OptionSpec::string(
                "clnrest-csp",
                "Content security policy (CSP) for the server",
            )
            .default(DEFAULT_CSP),
        )
        .option(OptionSpec::string("clnrest-swagger-root", "Root path for Swagger UI").default("/"))
        .rpcmethod(
            RpcMethod::new("clnrest-register-path", register_path)
                .usage("path rpc_method [http_method] [rune_required] [rune_restrictions]")
                .description("Register a dynamic REST path for clnrest"),
        )
        .subscribe("*", notification)
        .dynamic(true);
    let Some(configured) = builder
        .configure(fulgur_plugin_sdk::Transport::stdio())
        .await?
    else {
        return Ok(());
    };
    let opts = match options(&configured) {
        Ok(o) => o,
        Err(reason) => {
            configured.log(Level::Info, reason.clone());
            configured.disable(&reason).await?;
            return Ok(());
        }
    };
    let running = configured.start(state)?;
    let plugin = running.plugin();
    // A server that cannot run (its port taken, its certificates unreadable) is reported
    // and the plugin stays up: the node keeps running and `clnrest-register-path` answers.
    let server = tokio::spawn(async move {
        if let Err(e) = run_server(plugin.clone(), opts).await {
            plugin.error(format!("Error running rest interface: {e}"));
        }
    });
    let r = running.join().await;
    server.abort();
    r?;
    Ok(())
}
