"""`decode` of BOLT 11 invoices: the spec's own test vectors (BOLT 11, "Examples" and
"Examples of Invalid Invoices"), checked field by field against the values the spec states;
and of BOLT 12 offers, invoice requests and invoices (BOLT 12's example offer, strings LDK
made). Every result is validated against CLN's decode.json, here and by `node.rpc`, which
validates every method CLN has a schema for."""

import hashlib

import pytest
from pyln.client import RpcError

import clnschema

# Every spec example shares these.
PAYEE = "03e7156ae33b0a208d0744199163177e909e80176e55d97a2f221ede0f934dd9ad"
HASH = "0001020304050607080900010203040506070809000102030405060708090102"
SECRET = "11" * 32
CREATED = 1496314658
CAKE = hashlib.sha256(
    b"One piece of chocolate cake, one icecream cone, one pickle, one slice of swiss cheese, "
    b"one slice of salami, one lollypop, one piece of cherry pie, one sausage, one cupcake, "
    b"and one slice of watermelon").hexdigest()

DONATION = "lnbc1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6twvus8g6rfwvs8qun0dfjkxaq9qrsgq357wnc5r2ueh7ck6q93dj32dlqnls087fxdwk8qakdyafkq3yap9us6v52vjjsrvywa6rt52cm9r9zqt8r2t7mlcwspyetp5h2tztugp9lfyql"
COFFEE = "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh8nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
NONSENSE = "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpu9qrsgqhtjpauu9ur7fw2thcl4y9vfvh4m9wlfyz2gem29g5ghe2aak2pm3ps8fdhtceqsaagty2vph7utlgj48u0ged6a337aewvraedendscp573dxr"
DESC_HASH = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqs9qrsgq7ea976txfraylvgzuxs8kgcw23ezlrszfnh8r6qtfpr6cxga50aj6txm9rxrydzd06dfeawfk6swupvz4erwnyutnjq7x39ymw6j38gp7ynn44"
TESTNET_P2PKH = "lntb20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfpp3x9et2e20v6pu37c5d9vax37wxq72un989qrsgqdj545axuxtnfemtpwkc45hx9d2ft7x04mt8q7y6t0k2dge9e7h8kpy9p34ytyslj3yu569aalz2xdk8xkd7ltxqld94u8h2esmsmacgpghe9k8"
ROUTED = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9pygexvgpjdc4jdj85fr9yq20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqqvpeuqafqxu92d8lr6fvg0r5gv0heeeqgcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzq9qrsgqdfjcdk6w3ak5pca9hwfwfh63zrrz06wwfya0ydlzpgzxkn5xagsqz7x9j4jwe7yj7vaf2k9lqsdk45kts2fd0fkr28am0u4w95tt2nsq76cqw0"
P2SH = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppj3a24vwu6r8ejrss3axul8rxldph2q7z99qrsgqz6qsgww34xlatfj6e3sngrwfy3ytkt29d2qttr8qz2mnedfqysuqypgqex4haa2h8fx3wnypranf3pdwyluftwe680jjcfp438u82xqphf75ym"
P2WPKH = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfppqw508d6qejxtdg4y5r3zarvary0c5xw7k9qrsgqt29a0wturnys2hhxpner2e3plp6jyj8qx7548zr2z7ptgjjc7hljm98xhjym0dg52sdrvqamxdezkmqg4gdrvwwnf0kv2jdfnl4xatsqmrnsse"
P2WSH = "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygshp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqfp4qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q9qrsgq9vlvyj8cqvq6ggvpwd53jncp9nwc47xlrsnenq2zp70fq83qlgesn4u3uyf4tesfkkwwfg3qs54qe426hp3tz7z6sweqdjg05axsrjqp9yrrwc"
STORE = "lnbc9678785340p1pwmna7lpp5gc3xfm08u9qy06djf8dfflhugl6p7lgza6dsjxq454gxhj9t7a0sd8dgfkx7cmtwd68yetpd5s9xar0wfjn5gpc8qhrsdfq24f5ggrxdaezqsnvda3kkum5wfjkzmfqf3jkgem9wgsyuctwdus9xgrcyqcjcgpzgfskx6eqf9hzqnteypzxz7fzypfhg6trddjhygrcyqezcgpzfysywmm5ypxxjemgw3hxjmn8yptk7untd9hxwg3q2d6xjcmtv4ezq7pqxgsxzmnyyqcjqmt0wfjjq6t5v4khxsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygsxqyjw5qcqp2rzjq0gxwkzc8w6323m55m4jyxcjwmy7stt9hwkwe2qxmy8zpsgg7jcuwz87fcqqeuqqqyqqqqlgqqqqn3qq9q9qrsgqrvgkpnmps664wgkp43l22qsgdw4ve24aca4nymnxddlnp8vh9v2sdxlu5ywdxefsfvm0fq3sesf08uf6q9a2ke0hc9j6z6wlxg5z5kqpu2v9wz"
BEANS = "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqqsgq2a25dxl5hrntdtn6zvydt7d66hyzsyhqs4wdynavys42xgl6sgx9c4g7me86a27t07mdtfry458rtjr0v92cnmswpsjscgt2vcse3sgpz3uapa"
IGNORED = "lnbc25m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5vdhkven9v5sxyetpdeessp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q5sqqqqqqqqqqqqqqqqsgq2qrqqqfppnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqppnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqpp4qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqhpnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqhp4qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqspnqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqsp4qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnp5qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqnpkqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqz599y53s3ujmcfjp5xrdap68qxymkqphwsexhmhr8wdz5usdzkzrse33chw6dlp3jhuhge9ley7j2ayx36kawe7kmgg8sv5ugdyusdcqzn8z9x"
METADATA = "lnbc10m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdp9wpshjmt9de6zqmt9w3skgct5vysxjmnnd9jx2mq8q8a04uqsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q2gqqqqqqsgq7hf8he7ecf7n4ffphs6awl9t6676rrclv9ckg3d3ncn7fct63p6s365duk5wrk202cfy3aj5xnnp5gs3vrdvruverwwq7yzhkf5a3xqpd05wjc"
# Same, with the payee's key in an `n` field: the signature is verified against it.
METADATA_N = "lnbc10m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdp9wpshjmt9de6zqmt9w3skgct5vysxjmnnd9jx2mq8q8a04uqnp4q0n326hr8v9zprg8gsvezcch06gfaqqhde2aj730yg0durunfhv66sp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9q2gqqqqqqsgqy9gw6ymamd20jumvdgpfphkhp8fzhhdhycw36egcmla5vlrtrmhs9t7psfy3hkkdqzm9eq64fjg558znccds5nhsfmxveha5xe0dykgpspdha0"

# BOLT 12's string-format example offer.
SPEC_OFFER = "lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2uckyypwa3eyt44h6txtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg"
# Made with LDK (host/engine/src/bolt12.rs's tests): an invoice request for an offer of
# 10,000 msat ("coffee", "Fulgur café", at most 5) with quantity 2 and a payer note; a
# refund of 50,000 msat ("return", unsigned, as LDK's refunds are); a signed invoice for
# 10,000 msat with one blinded path and a P2WPKH fallback.
INVREQ = "lnr1qqcyxm3ta6r0mgh2lt4wpkxcvrdt7uy4xj8cga2wpdla84fgvj8xzkgfpyysjzgfpyysjzgfpyysjzgfpqpzwyq2qe3k7enxv4jsuprhxk2qqysvge6kcem4wgsxxctxcw53gqg9zcssxxuyc4t8kynygzv460k442aq2ewhrcvrgczgr8lec9l4a82a6pu02cqsykppqw3c4rg6u3svkzv2gn4x7gdav3486gt23hm07prjg7t64ky082snckgwvehhygr5dpjjqmmxve5kxe0sgqjzw2hguqsvf4ntmr8q52ndm3z7xuhlmg9f2ve5aay3xs8lf55tct0gmxm0x3exca0trqy88xylvzap0tc3tjunrvmlrjuza35jw8hp"
REFUND = "lnr1qqpszqsrpgr8yet5w4exu5szcdg9sggrgcnhnt2245u4z3s5w5d8zzzl9ugwr3a9j0jwqv80kku8y889tv9s"
B12_INVOICE = "lni1qqyqzqgpqyqszqgppgphgetpzcssxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8htqss9xyupdmvk43ew87un0hnrmqxcdtq7vjf6mhfuhvrc4mz2ktwqhm05p5qxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8hq0cqdgvd2efufm048y0lywnp7qlls0fr06yqaes3slaf7du6q28q5qgr7qr2rr2k20zwmaferler5c0s8lur6gm73q8wvyv8l20n0xsz3c9qqq42hw3pcqqqqqqsqqqqvsqzsqqqqqqqqqqqqyqqqqqqqq85ysqqqzjqgegqqqq2sgzzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzgfpyysjzg24qyfcs4stsqqq5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3kqssxckq5prd4n8gdhwsxs7x60ru08pzpzaqm8yu7f9x6prdy8fply8h7pqrf66gpm7rgq2u453rx86qx8yhhfne4v3d4tkxe943ujwsxr47ky4kf44qurle4hzn93wtmqg5h9a537e5s62ys80r8xnzu4sefd2rq5"

# BOLT 11 "Examples of Invalid Invoices".
INVALID = {
    "bech32 checksum is invalid": "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrnt",
    "no separator": "pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny",
    "mixed case": "LNBC2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpquwpc4curk03c9wlrswe78q4eyqc7d8d0xqzpuyk0sg5g70me25alkluzd2x62aysf2pyy8edtjeevuv4p2d5p76r4zkmneet7uvyakky2zr4cusd45tftc9c5fh0nnqpnl2jfll544esqchsrny",
    "signature not recoverable": "lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpusp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgqwgt7mcn5yqw3yx0w94pswkpq6j9uh6xfqqqtsk4tnarugeektd4hg5975x9am52rz4qskukxdmjemg92vvqz8nvmsye63r5ykel43pgz7zq0g2",
    "too short": "lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdpl2pkx2ctnv5sxxmmwwd5kgetjypeh2ursdae8g6na6hlh",
    "invalid multiplier": "lnbc2500x1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpusp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgqrrzc4cvfue4zp3hggxp47ag7xnrlr8vgcmkjxk3j5jqethnumgkpqp23z9jclu3v0a7e0aruz366e9wqdykw6dxhdzcjjhldxq0w6wgqcnu43j",
    "sub-millisatoshi amount": "lnbc2500000001p1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpusp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qrsgq0lzc236j96a95uv0m3umg28gclm5lqxtqqwk32uuk4k6673k6n5kfvx3d2h8s295fad45fdhmusm8sjudfhlf6dcsxmfvkeywmjdkxcp99202x",
}


def decode(node, s):
    req = {"string": s}
    clnschema.validate("decode.json", req, "request")
    r = node.rpc.call("decode", req)
    clnschema.validate("decode.json", r)
    assert (r["type"], r["valid"]) == ("bolt11 invoice", True)
    return r


def common(r, currency="bc", secret=True):
    assert r["currency"] == currency
    assert r["created_at"] == CREATED
    assert r["payee"] == PAYEE
    assert r["payment_hash"] == HASH
    if secret:
        assert r["payment_secret"] == SECRET
    assert r["signature"].startswith("30")


def test_donation_without_amount(node):
    r = decode(node, DONATION)
    common(r)
    assert "amount_msat" not in r
    assert r["description"] == "Please consider supporting this project"
    assert "description_hash" not in r
    assert (r["expiry"], r["min_final_cltv_expiry"]) == (3600, 18)
    assert r["features"] == "4100"  # var_onion_optin (8) + payment_secret (14), both even
    assert "fallbacks" not in r and "routes" not in r and "extra" not in r
    # compact signature 8d3ce9e2...d81127425e43...25f1 from the spec, DER-encoded (r has its
    # top bit set, hence the 00 in front of it)
    assert r["signature"] == (
        "30450221008d3ce9e28357337f62da0162d9454df827f83cfe499aeb1c1db349d4d8112742"
        "02205e434ca29929406c23bba1ae8ac6ca32880b38d4bf6ff874024cac34ba9625f1")
    # Positional params and the lightning: URI prefix give the same answer.
    assert node.rpc.call("decode", [DONATION]) == r
    assert node.rpc.call("decode", ["lightning:" + DONATION]) == r
    # The schema check is not vacuous: without a required field the result fails it.
    broken = {k: v for k, v in r.items() if k != "min_final_cltv_expiry"}
    with pytest.raises(AssertionError):
        clnschema.validate("decode.json", broken)


def test_amount_expiry_and_utf8_description(node):
    r = decode(node, COFFEE)
    common(r)
    assert r["amount_msat"] == 250_000_000  # 2500u
    assert r["description"] == "1 cup coffee"
    assert r["expiry"] == 60
    r = decode(node, NONSENSE)
    common(r)
    assert r["amount_msat"] == 250_000_000
    assert r["description"] == "ナンセンス 1杯"


def test_description_hash(node):
    r = decode(node, DESC_HASH)
    common(r)
    assert r["amount_msat"] == 2_000_000_000  # 20m
    assert r["description_hash"] == CAKE
    assert "description" not in r


@pytest.mark.parametrize("inv,currency,kind,addr,script", [
    (TESTNET_P2PKH, "tb", "P2PKH", "mk2QpYatsKicvFVuTAQLBryyccRXMUaGHP",
     "76a9143172b5654f6683c8fb146959d347ce303cae4ca788ac"),
    (P2SH, "bc", "P2SH", "3EktnHQD7RiAE6uzMj2ZifT9YgRrkSgzQX",
     "a9148f55563b9a19f321c211e9b9f38cdf686ea0784587"),
    (P2WPKH, "bc", "P2WPKH", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
     "0014751e76e8199196d454941c45d1b3a323f1433bd6"),
    (P2WSH, "bc", "P2WSH", "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3",
     "00201863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"),
])
def test_fallback_addresses(node, inv, currency, kind, addr, script):
    r = decode(node, inv)
    common(r, currency)
    assert r["description_hash"] == CAKE
    assert r["fallbacks"] == [{"type": kind, "addr": addr, "hex": script}]


def test_fallback_and_routing_hints(node):
    r = decode(node, ROUTED)
    common(r)
    assert r["fallbacks"] == [{"type": "P2PKH", "addr": "1RustyRX2oai4EYYDpQGWvEL62BBGqN9T",
                               "hex": "76a91404b61f7dc1ea0dc99424464cc4064dc564d91e8988ac"}]
    assert r["routes"] == [[
        {"pubkey": "029e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
         "short_channel_id": "66051x263430x1800", "fee_base_msat": 1,
         "fee_proportional_millionths": 20, "cltv_expiry_delta": 3},
        {"pubkey": "039e03a901b85534ff1e92c43c74431f7ce72046060fcf7a95c37e148f78c77255",
         "short_channel_id": "197637x395016x2314", "fee_base_msat": 2,
         "fee_proportional_millionths": 30, "cltv_expiry_delta": 4},
    ]]


def test_real_world_invoice(node):
    """The spec's Blockstream Store invoice: pico-BTC amount, x, c and one route hint."""
    r = decode(node, STORE)
    assert r["currency"] == "bc"
    assert r["amount_msat"] == 967878534  # 9678785340p
    assert r["created_at"] == 1572468703
    assert r["payment_hash"] == "462264ede7e14047e9b249da94fefc47f41f7d02ee9b091815a5506bc8abf75f"
    assert r["payee"] == PAYEE
    assert (r["expiry"], r["min_final_cltv_expiry"]) == (604800, 10)
    assert r["description"].startswith("Blockstream Store: 88.85 USD for Blockstream Ledger")
    assert r["routes"] == [[{
        "pubkey": "03d06758583bb5154774a6eb221b1276c9e82d65bbaceca806d90e20c108f4b1c7",
        "short_channel_id": "589390x3312x1", "fee_base_msat": 1000,
        "fee_proportional_millionths": 2500, "cltv_expiry_delta": 40}]]


def test_unknown_features_uppercase_and_ignored_fields(node):
    r = decode(node, BEANS)
    common(r)
    assert r["amount_msat"] == 2_500_000_000
    assert r["description"] == "coffee beans"
    assert r["features"] == "08000000000000000000004100"  # bits 8, 14 and 99
    assert decode(node, BEANS.upper()) == r
    # Fields the reader must skip (unknown tag, p/h/s/n of the wrong length) do not
    # change what the invoice says; CLN lists them under `extra`.
    s = decode(node, IGNORED)
    for k in ("amount_msat", "description", "payment_hash", "payment_secret", "payee",
              "features", "created_at"):
        assert s[k] == r[k], k
    tags = sorted(e["tag"] for e in s["extra"])
    # unknown tag 2, a version-17 fallback, and p/h/s/n with 51- or 53-character data
    assert tags == ["2", "f", "h", "h", "n", "n", "p", "p", "s", "s"]
    assert {"tag": "2", "data": "qqq"} in s["extra"]  # "2qrqqq": tag 2, length 3
    assert "fallbacks" not in s


def test_payment_metadata(node):
    r = decode(node, METADATA)
    common(r)
    assert r["amount_msat"] == 1_000_000_000
    assert r["description"] == "payment metadata inside"
    assert r["payment_metadata"] == "01fafaf0"
    n = decode(node, METADATA_N)
    assert (n["payee"], n["payment_metadata"]) == (PAYEE, "01fafaf0")


@pytest.mark.parametrize("why", sorted(INVALID))
def test_spec_invalid_invoices(node, why):
    with pytest.raises(RpcError) as e:
        node.rpc.call("decode", {"string": INVALID[why]})
    assert e.value.error["code"] == -32602
    assert e.value.error["message"].startswith("string: ")


def tamper(s, i):
    c = s[i]
    return s[:i] + ("q" if c != "q" else "p") + s[i + 1:]


@pytest.mark.parametrize("bad", [
    tamper(ROUTED, 40),        # in the payment secret
    tamper(ROUTED, len(ROUTED) - 20),  # in the signature
    tamper(DONATION, 4),       # in the hrp (amount/timestamp boundary)
    "garbage",
    "",
    "lnbc",
    SPEC_OFFER[:-10],          # the offer cut short: its last field (issuer id) is too short
    SPEC_OFFER + "+",          # a `+` at the end is no separator
    "lno1pgqhs",               # an offer with neither issuer id nor paths
])
def test_tampered_and_garbage(node, bad):
    with pytest.raises(RpcError) as e:
        node.rpc.call("decode", {"string": bad})
    assert e.value.error["code"] == -32602


def test_params(node):
    with pytest.raises(RpcError) as e:
        node.rpc.call("decode", {})
    assert e.value.error["code"] == -32602
    with pytest.raises(RpcError) as e:
        node.rpc.call("decode", {"string": 5})
    assert e.value.error["code"] == -32602


def decode12(node, s, kind, valid=True):
    req = {"string": s}
    clnschema.validate("decode.json", req, "request")
    r = node.rpc.call("decode", req)
    clnschema.validate("decode.json", r)
    assert (r["type"], r["valid"]) == (kind, valid), r
    return r


def test_bolt12_spec_offer(node):
    r = decode12(node, SPEC_OFFER, "bolt12 offer")
    assert r == {
        "type": "bolt12 offer",
        "offer_id": "b431fa81080dbb1fe6b33543a11ddfcc5aa0b08f0633038adc026752268dab75",
        "offer_amount_msat": 1000000,
        "offer_description": "An example description",
        "offer_issuer": "BOLT 12 industries",
        "offer_issuer_id": "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619",
        "valid": True,
    }
    # Split over lines with `+`, upper case, behind `lightning:`: the same offer.
    split = SPEC_OFFER[:40] + "+\n  " + SPEC_OFFER[40:]
    assert decode12(node, split, "bolt12 offer") == r
    assert decode12(node, "LIGHTNING:" + SPEC_OFFER.upper(), "bolt12 offer") == r


def test_bolt12_invoice_request_and_refund(node):
    r = decode12(node, INVREQ, "bolt12 invoice_request")
    assert r["offer_description"] == "coffee"
    assert r["offer_issuer"] == "Fulgur café"
    assert (r["offer_amount_msat"], r["offer_quantity_max"]) == (10000, 5)
    assert (r["invreq_quantity"], r["invreq_payer_note"]) == (2, "for the office")
    assert len(r["signature"]) == 128 and len(r["offer_id"]) == 64
    # The refund: an invoice request with no offer (no offer_id) and, from LDK, unsigned.
    r = decode12(node, REFUND, "bolt12 invoice_request", valid=False)
    assert "offer_id" not in r
    assert r["invreq_amount_msat"] == 50000
    assert r["offer_description"] == "return"
    assert r["warning_missing_invoice_request_signature"] == "Missing signature"


def test_bolt12_invoice(node):
    r = decode12(node, B12_INVOICE, "bolt12 invoice")
    assert (r["invoice_amount_msat"], r["invoice_created_at"]) == (10000, 0x65000000)
    assert r["invoice_relative_expiry"] == 7200  # the default when absent
    assert r["invoice_payment_hash"] == "42" * 32
    assert r["invoice_node_id"] == r["offer_issuer_id"]
    [path] = r["invoice_paths"]
    assert path["first_node_id"] == r["invoice_node_id"]
    assert path["payinfo"]["cltv_expiry_delta"] == 40
    assert path["path"][0]["encrypted_recipient_data"] == "aabb"
    [fallback] = r["invoice_fallbacks"]
    assert (fallback["version"], fallback["address"]) == (0, "bc1qzyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3h8ffkz")
    # One character of the signed part changed: CLN's "Invalid signature" refusal.
    with pytest.raises(RpcError) as e:
        node.rpc.call("decode", {"string": tamper(B12_INVOICE, 60)})
    assert e.value.error["code"] == -32602
