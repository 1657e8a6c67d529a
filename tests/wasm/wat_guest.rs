// A WASM plugin written in WAT, shared by the host's unit tests
// (host/plugins/src/wasm/engine_tests.rs) and the end-to-end tests (tests/tests/wasm_plugins.rs)
// through `include!`. It speaks the plugin ABI of docs/WASM.md with no JSON library: it
// recognises messages by substrings of the host's compact JSON and copies the request id.
//
// Behaviour, by what the message contains:
// - `getmanifest`: answers with the manifest given to `guest_wat`; `init`: answers `{}`.
// - method `hello`: answers `{"greeting":"hi"}`.
// - method `spin`: loops forever; `grow`: grows memory until it fails; `crash`: traps;
//   `garbage`: sends a message that is not JSON.
// - method `callrpc`: calls the node's `withdraw` (id "g1") and `getinfo` (id "g2"), then
//   answers `{}`. A refused call is logged as "wasm guest: rpc denied", a `getinfo` answer
//   as "wasm guest: getinfo answered".
// - notification `block_added`: logs "wasm guest: block_added seen".
// - hook `htlc_accepted`: with `answer_now` in the payload answers at once with
//   `fail 400f`; with `crash_now` traps; with `hold_forever` keeps the call unanswered
//   (until the instance dies); otherwise keeps the id, asks for a 100 ms timer,
//   and when the timer fires answers `resolve` with payment_key 11..11 (a late answer).
//
// Escapes it tries (each answered or logged so that a test can tell what happened):
// - hook `rpc_command` (only in a manifest from `guest_manifest_with`): a call of
//   `getinfo` is `replace`d by a `withdraw` of everything, a call of `listpeers` by
//   `listfunds`; anything else continues.
// - method `bigrandom`: `random_get` of 256 MiB into its small memory; answers
//   `{"errno":N}`.
// - method `bigwrite`: grows its memory to 18 MiB and `fd_write`s eight iovecs over one
//   16 MiB region to stderr; answers `{"errno":N}`.
// - method `busy`: writes "wasm guest: busy" to stderr, then calls `clock_time_get` in an
//   endless loop (it ends only when fuel, the wall clock or `plugin stop` ends it).
// - method `timers`: asks for 100 one-hour timers at once, answers `{}`; each refused
//   timer is logged as "wasm guest: timer refused".
// - method `leak`: calls `listconfigs` (id "g3") and `listdatastore` (id "g4"), answers
//   `{}`. It logs "wasm guest: saw rpcpassword" or "wasm guest: listconfigs clean", and
//   "wasm guest: saw a foreign key" or "wasm guest: listdatastore clean".

/// The WAT text of the guest, with `manifest` (JSON) as its getmanifest answer.
pub fn guest_wat(manifest: &str) -> String {
    let mut data = String::new();
    let mut next = 1024usize;
    let mut lit = |text: &str| -> String {
        let off = next;
        let mut esc = String::new();
        for b in text.bytes() {
            match b {
                b'"' => esc.push_str("\\\""),
                b'\\' => esc.push_str("\\\\"),
                0x20..=0x7e => esc.push(b as char),
                other => esc.push_str(&format!("\\{other:02x}")),
            }
        }
        data.push_str(&format!("  (data (i32.const {off}) \"{esc}\")\n"));
        next += text.len();
        assert!(next < 8192, "guest literals overflow their area");
        format!("(i32.const {off}) (i32.const {})", text.len())
    };
    let id_pat = lit("\"id\":");
    let m_getmanifest = lit("\"method\":\"getmanifest\"");
    let m_init = lit("\"method\":\"init\"");
    let m_htlc = lit("\"method\":\"htlc_accepted\"");
    let m_hello = lit("\"method\":\"hello\"");
    let m_spin = lit("\"method\":\"spin\"");
    let m_grow = lit("\"method\":\"grow\"");
    let m_crash = lit("\"method\":\"crash\"");
    let m_garbage = lit("\"method\":\"garbage\"");
    let m_callrpc = lit("\"method\":\"callrpc\"");
    let m_block = lit("\"method\":\"block_added\"");
    let answer_now = lit("answer_now");
    let crash_now = lit("crash_now");
    let hold_forever = lit("hold_forever");
    let id_timer = lit("\"id\":\"timer1\"");
    let id_g2 = lit("\"id\":\"g2\"");
    let has_result = lit("\"result\"");
    let denied = lit("not in its allow-rpc list");
    let head = lit("{\"jsonrpc\":\"2.0\",\"id\":");
    let mid = lit(",\"result\":");
    let tail = lit("}");
    let manifest = lit(manifest);
    let empty = lit("{}");
    let hi = lit("{\"greeting\":\"hi\"}");
    let fail_now = lit("{\"result\":\"fail\",\"failure_message\":\"400f\"}");
    let resolve = lit(
        "{\"result\":\"resolve\",\"payment_key\":\"1111111111111111111111111111111111111111111111111111111111111111\"}",
    );
    let timer_req =
        lit("{\"jsonrpc\":\"2.0\",\"id\":\"timer1\",\"method\":\"wasm_timer\",\"params\":{\"ms\":100}}");
    let withdraw_req = lit(
        "{\"jsonrpc\":\"2.0\",\"id\":\"g1\",\"method\":\"withdraw\",\"params\":{\"destination\":\"x\",\"satoshi\":\"all\"}}",
    );
    let getinfo_req = lit("{\"jsonrpc\":\"2.0\",\"id\":\"g2\",\"method\":\"getinfo\",\"params\":{}}");
    let log = |m: &str| {
        format!("{{\"jsonrpc\":\"2.0\",\"method\":\"log\",\"params\":{{\"level\":\"info\",\"message\":\"wasm guest: {m}\"}}}}")
    };
    let log_block = lit(&log("block_added seen"));
    let log_denied = lit(&log("rpc denied"));
    let log_getinfo = lit(&log("getinfo answered"));
    let garbage = lit("this is not json");
    let m_rpc_command = lit("\"method\":\"rpc_command\"");
    let m_getinfo = lit("\"method\":\"getinfo\"");
    let m_listpeers = lit("\"method\":\"listpeers\"");
    let m_bigrandom = lit("\"method\":\"bigrandom\"");
    let m_bigwrite = lit("\"method\":\"bigwrite\"");
    let m_busy = lit("\"method\":\"busy\"");
    let m_timers = lit("\"method\":\"timers\"");
    let m_leak = lit("\"method\":\"leak\"");
    let to_withdraw = lit(
        "{\"replace\":{\"jsonrpc\":\"2.0\",\"id\":\"r1\",\"method\":\"withdraw\",\"params\":{\"destination\":\"bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080\",\"satoshi\":\"all\"}}}",
    );
    let to_listfunds = lit(
        "{\"replace\":{\"jsonrpc\":\"2.0\",\"id\":\"r2\",\"method\":\"listfunds\",\"params\":{}}}",
    );
    let cont = lit("{\"result\":\"continue\"}");
    let errno_head = lit("{\"errno\":");
    let busy_line = lit("wasm guest: busy\n");
    let timer_long =
        lit("{\"jsonrpc\":\"2.0\",\"id\":\"tx\",\"method\":\"wasm_timer\",\"params\":{\"ms\":3600000}}");
    let id_tx = lit("\"id\":\"tx\"");
    let too_many = lit("too many timers");
    let listconfigs_req =
        lit("{\"jsonrpc\":\"2.0\",\"id\":\"g3\",\"method\":\"listconfigs\",\"params\":{}}");
    let listdatastore_req =
        lit("{\"jsonrpc\":\"2.0\",\"id\":\"g4\",\"method\":\"listdatastore\",\"params\":{}}");
    let id_g3 = lit("\"id\":\"g3\"");
    let id_g4 = lit("\"id\":\"g4\"");
    let rpcpassword = lit("rpcpassword");
    let othersecret = lit("othersecret");
    let log_timer_refused = lit(&log("timer refused"));
    let log_saw_password = lit(&log("saw rpcpassword"));
    let log_configs_clean = lit(&log("listconfigs clean"));
    let log_saw_foreign = lit(&log("saw a foreign key"));
    let log_datastore_clean = lit(&log("listdatastore clean"));
    format!(
        r#"(module
  (import "fulgur" "send" (func $send (param i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (memory (export "memory") 2)
  (global $msg (mut i32) (i32.const 0))
  (global $len (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 16384))
  (global $held (mut i32) (i32.const 0))
{data}
  (func (export "alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 65536) (local.get $n)))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (local.get $need) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $grow)))
    (i32.const 65536))
  (func $find (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (block $none
      (loop $outer
        (br_if $none (i32.gt_s (i32.add (local.get $i) (local.get $nl)) (global.get $len)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (if (i32.ge_u (local.get $j) (local.get $nl)) (then (return (local.get $i))))
            (br_if $mismatch
              (i32.ne
                (i32.load8_u (i32.add (global.get $msg) (i32.add (local.get $i) (local.get $j))))
                (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const -1))
  (func $has (param i32 i32) (result i32)
    (i32.ge_s (call $find (local.get 0) (local.get 1)) (i32.const 0)))
  (func $put (param $p i32) (param $l i32)
    (memory.copy (global.get $out) (local.get $p) (local.get $l))
    (global.set $out (i32.add (global.get $out) (local.get $l))))
  ;; Copies the message's id (a JSON string or number) to $dst; returns its length.
  (func $id_to (param $dst i32) (result i32)
    (local $i i32) (local $s i32) (local $c i32)
    (local.set $i (call $find {id_pat}))
    (if (i32.lt_s (local.get $i) (i32.const 0)) (then (return (i32.const 0))))
    (local.set $s (i32.add (global.get $msg) (i32.add (local.get $i) (i32.const 5))))
    (local.set $i (i32.const 1))
    (if (i32.eq (i32.load8_u (local.get $s)) (i32.const 34))
      (then
        (block $done
          (loop $l
            (local.set $c (i32.load8_u (i32.add (local.get $s) (local.get $i))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (if (i32.eq (local.get $c) (i32.const 92))
              (then (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $l)))
            (br_if $done (i32.eq (local.get $c) (i32.const 34)))
            (br $l))))
      (else
        (block $done
          (loop $l
            (local.set $c (i32.load8_u (i32.add (local.get $s) (local.get $i))))
            (br_if $done (i32.eq (local.get $c) (i32.const 44)))
            (br_if $done (i32.eq (local.get $c) (i32.const 125)))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l)))))
    (memory.copy (local.get $dst) (local.get $s) (local.get $i))
    (local.get $i))
  (func $flush
    (call $send (i32.const 16384) (i32.sub (global.get $out) (i32.const 16384)))
    (global.set $out (i32.const 16384)))
  (func $respond (param $p i32) (param $l i32)
    (global.set $out (i32.const 16384))
    (call $put {head})
    (global.set $out (i32.add (global.get $out) (call $id_to (global.get $out))))
    (call $put {mid})
    (call $put (local.get $p) (local.get $l))
    (call $put {tail})
    (call $flush))
  ;; Answers {{"errno":E}} (E < 100).
  (func $respond_errno (param $e i32)
    (global.set $out (i32.const 16384))
    (call $put {head})
    (global.set $out (i32.add (global.get $out) (call $id_to (global.get $out))))
    (call $put {mid})
    (call $put {errno_head})
    (if (i32.ge_u (local.get $e) (i32.const 10))
      (then
        (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.div_u (local.get $e) (i32.const 10))))
        (global.set $out (i32.add (global.get $out) (i32.const 1)))))
    (i32.store8 (global.get $out) (i32.add (i32.const 48) (i32.rem_u (local.get $e) (i32.const 10))))
    (global.set $out (i32.add (global.get $out) (i32.const 1)))
    (call $put {tail})
    (call $put {tail})
    (call $flush))
  ;; Eight iovecs at 12288, each over the same 16 MiB from 1 MiB.
  (func $bigwrite (result i32)
    (local $i i32)
    (drop (memory.grow (i32.const 288)))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const 8)))
        (i32.store (i32.add (i32.const 12288) (i32.mul (local.get $i) (i32.const 8))) (i32.const 1048576))
        (i32.store (i32.add (i32.const 12292) (i32.mul (local.get $i) (i32.const 8))) (i32.const 16777216))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $fd_write (i32.const 2) (i32.const 12288) (i32.const 8) (i32.const 12352)))
  (func $busy (param $p i32) (param $l i32)
    (i32.store (i32.const 12288) (local.get $p))
    (i32.store (i32.const 12292) (local.get $l))
    (drop (call $fd_write (i32.const 2) (i32.const 12288) (i32.const 1) (i32.const 12352)))
    (loop $forever
      (drop (call $clock (i32.const 1) (i64.const 0) (i32.const 12352)))
      (br $forever)))
  (func (export "on_message") (param $p i32) (param $l i32)
    (local $i i32)
    (global.set $msg (local.get $p))
    (global.set $len (local.get $l))
    (if (call $has {m_getmanifest}) (then (call $respond {manifest}) (return)))
    (if (call $has {m_init}) (then (call $respond {empty}) (return)))
    (if (call $has {m_rpc_command})
      (then
        (if (call $has {m_getinfo}) (then (call $respond {to_withdraw}) (return)))
        (if (call $has {m_listpeers}) (then (call $respond {to_listfunds}) (return)))
        (call $respond {cont})
        (return)))
    (if (call $has {m_bigrandom})
      (then (call $respond_errno (call $random_get (i32.const 0) (i32.const 268435456))) (return)))
    (if (call $has {m_bigwrite}) (then (call $respond_errno (call $bigwrite)) (return)))
    (if (call $has {m_busy}) (then (call $busy {busy_line})))
    (if (call $has {m_timers})
      (then
        (block $done
          (loop $l
            (br_if $done (i32.ge_u (local.get $i) (i32.const 100)))
            (call $send {timer_long})
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $l)))
        (call $respond {empty})
        (return)))
    (if (call $has {id_tx})
      (then (if (call $has {too_many}) (then (call $send {log_timer_refused}))) (return)))
    (if (call $has {m_leak})
      (then
        (call $send {listconfigs_req})
        (call $send {listdatastore_req})
        (call $respond {empty})
        (return)))
    (if (call $has {id_g3})
      (then
        (if (call $has {rpcpassword})
          (then (call $send {log_saw_password}))
          (else (call $send {log_configs_clean})))
        (return)))
    (if (call $has {id_g4})
      (then
        (if (call $has {othersecret})
          (then (call $send {log_saw_foreign}))
          (else (call $send {log_datastore_clean})))
        (return)))
    (if (call $has {m_htlc})
      (then
        (if (call $has {answer_now}) (then (call $respond {fail_now}) (return)))
        (if (call $has {crash_now}) (then unreachable))
        (if (call $has {hold_forever}) (then (return)))
        (global.set $held (call $id_to (i32.const 8192)))
        (call $send {timer_req})
        (return)))
    (if (call $has {m_hello}) (then (call $respond {hi}) (return)))
    (if (call $has {m_spin}) (then (loop $forever (br $forever))))
    (if (call $has {m_grow})
      (then (loop $more (drop (memory.grow (i32.const 16))) (br $more))))
    (if (call $has {m_crash}) (then unreachable))
    (if (call $has {m_garbage}) (then (call $send {garbage}) (return)))
    (if (call $has {m_callrpc})
      (then
        (call $send {withdraw_req})
        (call $send {getinfo_req})
        (call $respond {empty})
        (return)))
    (if (call $has {m_block}) (then (call $send {log_block}) (return)))
    (if (call $has {id_timer})
      (then
        (global.set $out (i32.const 16384))
        (call $put {head})
        (call $put (i32.const 8192) (global.get $held))
        (call $put {mid})
        (call $put {resolve})
        (call $put {tail})
        (call $flush)
        (return)))
    (if (call $has {denied}) (then (call $send {log_denied}) (return)))
    (if (call $has {id_g2})
      (then (if (call $has {has_result}) (then (call $send {log_getinfo}))))))
)
"#
    )
}

/// A manifest for the guest: its methods, the `htlc_accepted` hook and the `block_added`
/// topic.
pub fn guest_manifest() -> String {
    guest_manifest_with(&["htlc_accepted"])
}

/// A manifest for the guest registering `hooks` (`rpc_command`, `htlc_accepted` or none).
pub fn guest_manifest_with(hooks: &[&str]) -> String {
    let methods: Vec<String> = [
        "hello", "callrpc", "spin", "crash", "bigrandom", "bigwrite", "busy", "timers", "leak",
    ]
    .iter()
    .map(|name| format!("{{\"name\":\"{name}\",\"usage\":\"\",\"description\":\"t\"}}"))
    .collect();
    let hooks: Vec<String> = hooks.iter().map(|h| format!("\"{h}\"")).collect();
    format!(
        "{{\"options\":[],\"rpcmethods\":[{}],\"hooks\":[{}],\"subscriptions\":[\"block_added\"],\"dynamic\":true}}",
        methods.join(","),
        hooks.join(",")
    )
}
