//! The packet decoders every byte from a client goes through before any dialect sees it, fed
//! hostile input: the Engine.IO packet parser (`engineioxide-core`) and the Socket.IO parser
//! the gateway configures (`socketioxide-parser-common`, no binary attachments), then serde's
//! decoding of an event's arguments into JSON, as the gateway's handlers receive them.
//!
//! For every input: no panic, and no allocation beyond a small multiple of the input
//! (`allocation-counter` measures each decode on its own thread). The committed corpus
//! (`tests/corpus/packets.txt`, one packet per line, `\n`/`\u{1e}`/`\0` written as escapes) is
//! replayed first; proptest then generates `PROPTEST_CASES` (default 2,000) cases per property
//! from a fixed seed, so a CI run is bounded and repeatable. Failures proptest finds are
//! written to `tests/decoders.proptest-regressions`: commit them.
//!
//! The dialects' payload decoders are fuzzed end to end, through real sockets, by
//! `tests/contract/security/fuzz.test.mjs`.

use engineioxide_core::{Packet as EnginePacket, ProtocolVersion};
use proptest::prelude::*;
use socketioxide_core::{
    packet::PacketData,
    parser::{Parse, ParseConfig, ParserState},
};
use socketioxide_parser_common::CommonParser;

/// Peak bytes allocated by this thread while running `f` (`allocation-counter` is this test
/// binary's global allocator and counts per thread).
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(f()));
    (out.expect("ran"), info.bytes_max as usize)
}

/// What a decode may allocate: a small multiple of the input, plus constant overhead (a JSON
/// value tree costs a few times its text).
fn allowance(input: &str) -> usize {
    16 * input.len() + 64 * 1024
}

/// The parser configuration the gateway runs (`lib.rs`): no binary attachments.
fn gateway_parse_config() -> ParseConfig {
    ParseConfig {
        max_incoming_binaries: 0,
        max_incoming_binary_buf_size: 0,
        ..ParseConfig::default()
    }
}

/// Decodes `input` as the gateway does: an Engine.IO packet, and when it is a message, the
/// Socket.IO packet inside it, and when that is an event, its name and arguments as JSON.
fn decode(input: &str) {
    let message = match EnginePacket::parse(ProtocolVersion::V4, input.to_string()) {
        Ok(EnginePacket::Message(m)) => m,
        _ => return,
    };
    let state = ParserState::default();
    let Ok(packet) = CommonParser.decode_str(&gateway_parse_config(), &state, message) else {
        return;
    };
    if let PacketData::Event(mut value, _) | PacketData::EventAck(mut value, _) = packet.inner {
        let _ = CommonParser.read_event(&value).map(str::len);
        let _ = CommonParser.decode_value::<serde_json::Value>(&mut value, true);
        let _ = CommonParser.decode_value::<Vec<serde_json::Value>>(&mut value, false);
    }
}

/// Decodes `input` on a fresh thread (so the allocation count is this decode's alone) and
/// checks it neither panicked nor allocated beyond its allowance.
fn check(input: &str) -> Result<(), String> {
    let owned = input.to_string();
    let outcome = std::thread::spawn(move || {
        let ((), peak) = peak_allocation(|| decode(&owned));
        peak
    })
    .join();
    match outcome {
        Err(_) => Err(format!("the decoder panicked on {input:?}")),
        Ok(peak) if peak > allowance(input) => Err(format!(
            "decoding {} bytes allocated {peak} bytes: {:?}",
            input.len(),
            input.chars().take(200).collect::<String>()
        )),
        Ok(_) => Ok(()),
    }
}

/// The committed corpus, one packet per line; `\n`, `\u{1e}`, `\0` and `\\` are escapes.
fn corpus() -> Vec<String> {
    include_str!("corpus/packets.txt")
        .lines()
        .filter(|l| !l.starts_with("# "))
        .map(|l| {
            l.replace("\\n", "\n")
                .replace("\\u{1e}", "\u{1e}")
                .replace("\\0", "\0")
                .replace("\\\\", "\\")
        })
        .collect()
}

#[test]
fn the_corpus_decodes_without_panic_or_blowup() {
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the corpus is there");
    for input in &corpus {
        check(input).unwrap();
    }
}

#[test]
fn the_allocation_check_would_catch_a_blowup() {
    // The harness itself: a decode that allocates 1 MiB for a few bytes fails the check.
    let ((), peak) = peak_allocation(|| drop(vec![0u8; 1 << 20]));
    assert!(peak >= 1 << 20 && peak > allowance("42[]"));
}

/// Socket.IO-looking packets: a type digit, maybe a namespace and an ack id, then JSON-ish
/// text; and deeply nested arrays, which recursive decoders overflow the stack on.
fn packet() -> impl Strategy<Value = String> {
    let json_ish = prop_oneof![
        any::<String>(),
        "[\\[\\]{}\":,0-9a-z\\\\e.+-]{0,200}",
        (1usize..5_000).prop_map(|depth| "[".repeat(depth)),
        (1usize..5_000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        (1usize..3_000).prop_map(|depth| "{\"a\":".repeat(depth)),
    ];
    (
        "[0-6]?",
        "(/[a-z/]{0,10},)?",
        "[0-9]{0,25}",
        "[0-9-]{0,6}",
        json_ish,
    )
        .prop_map(|(ty, ns, ack, attachments, body)| format!("4{ty}{attachments}{ns}{ack}{body}"))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000),
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_text_decodes_without_panic_or_blowup(input in any::<String>()) {
        check(&input).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn packet_shaped_text_decodes_without_panic_or_blowup(input in packet()) {
        check(&input).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn an_event_arrives_as_its_arguments() {
    // The decode path above is the one events take: a well-formed event yields its name and
    // arguments (so the properties exercise the real path, not an early error).
    let Ok(EnginePacket::Message(m)) = EnginePacket::parse(
        ProtocolVersion::V4,
        "42/guild,7[\"message:create\",{\"channelId\":1}]".to_string(),
    ) else {
        panic!("an Engine.IO message");
    };
    let packet = CommonParser
        .decode_str(&gateway_parse_config(), &ParserState::default(), m)
        .expect("a Socket.IO packet");
    assert_eq!(packet.ns.as_ref() as &str, "/guild");
    let PacketData::Event(mut value, Some(7)) = packet.inner else {
        panic!("an event with ack id 7");
    };
    assert_eq!(CommonParser.read_event(&value).unwrap(), "message:create");
    let args: serde_json::Value = CommonParser.decode_value(&mut value, true).unwrap();
    assert_eq!(args, serde_json::json!({ "channelId": 1 }));
    // And a binary event is refused by the gateway's configuration.
    let Ok(EnginePacket::Message(m)) = EnginePacket::parse(
        ProtocolVersion::V4,
        "451-[\"x\",{\"_placeholder\":true,\"num\":0}]".to_string(),
    ) else {
        panic!("an Engine.IO message");
    };
    assert!(
        CommonParser
            .decode_str(&gateway_parse_config(), &ParserState::default(), m)
            .is_err()
    );
}
