//! The stored form of one batch of request records (`request_log_batches.records`).
//!
//! Format 1: a format byte, the number of records, then each record in seq order:
//!
//! | field | encoding |
//! |---|---|
//! | `at` | zigzag varint of the difference to the previous record's (the first: to 0) |
//! | request id | `1` and the 16 bytes of a `req_` id that reads back the same, else `0` and a string |
//! | organization, principal, action, user agent | four varints: ids into `request_log_terms` |
//! | resource, result | strings |
//! | status | zigzag varint |
//! | client address | string |
//! | latency (µs) | zigzag varint |
//! | hash | 32 bytes |
//!
//! A string is a varint byte length and its UTF-8 bytes. A batch's seq range, times and the
//! hash before it are columns beside the blob. A later format gets a new format byte, and
//! this one must keep reading (the golden test pins it).

use std::str::FromStr;

use tether_core::id::RequestId;

use super::TERMS;
use crate::{RequestLogRecord, Result, StoreError};

/// The format byte of the encoding above.
const FORMAT: u8 = 1;
/// Request id tags.
const ID_TEXT: u8 = 0;
const ID_REQ: u8 = 1;
/// The length of a record's hash.
const HASH_LEN: usize = 32;

/// Encodes `records`, whose interned strings have the ids `terms`.
pub(super) fn encode(records: &[RequestLogRecord], terms: &[[i64; TERMS]]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + records.len() * 96);
    out.push(FORMAT);
    varint(&mut out, records.len() as u64);
    let mut prev_at = 0i64;
    for (r, ids) in records.iter().zip(terms) {
        varint(&mut out, zigzag(r.at.wrapping_sub(prev_at)));
        prev_at = r.at;
        match RequestId::from_str(&r.request_id) {
            Ok(id) if id.to_string() == r.request_id => {
                out.push(ID_REQ);
                out.extend_from_slice(&id.as_u128().to_be_bytes());
            }
            _ => {
                out.push(ID_TEXT);
                string(&mut out, &r.request_id);
            }
        }
        for id in ids {
            varint(&mut out, zigzag(*id));
        }
        string(&mut out, &r.resource);
        string(&mut out, &r.result);
        varint(&mut out, zigzag(i64::from(r.status)));
        string(&mut out, &r.ip);
        varint(&mut out, zigzag(r.latency_us));
        let hash = hex::decode(&r.hash)
            .ok()
            .filter(|h| h.len() == HASH_LEN)
            .ok_or_else(|| corrupt("a record's hash is not 32 bytes of hex"))?;
        out.extend_from_slice(&hash);
    }
    Ok(out)
}

/// Decodes a batch: each record (its interned strings empty, its `seq` and `prev_hash` unset)
/// with the ids of its interned strings.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<(RequestLogRecord, [i64; TERMS])>> {
    let mut r = Reader { bytes, pos: 0 };
    if r.byte()? != FORMAT {
        return Err(corrupt("unknown request log batch format"));
    }
    let n = r.varint()?;
    // Every record takes more than 32 bytes: a count beyond that is corrupt, not a reason to
    // reserve memory.
    if n > (bytes.len() / HASH_LEN) as u64 {
        return Err(corrupt("request log batch count exceeds its length"));
    }
    let mut records = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    let mut at = 0i64;
    for _ in 0..n {
        at = at.wrapping_add(unzigzag(r.varint()?));
        let request_id = match r.byte()? {
            ID_REQ => {
                let raw: [u8; 16] = r.take(16)?.try_into().map_err(|_| corrupt("request id"))?;
                tether_core::id::format_prefixed(RequestId::PREFIX, u128::from_be_bytes(raw))
            }
            ID_TEXT => r.string()?,
            _ => return Err(corrupt("unknown request id tag")),
        };
        let mut ids = [0i64; TERMS];
        for id in &mut ids {
            *id = unzigzag(r.varint()?);
        }
        let resource = r.string()?;
        let result = r.string()?;
        let status = i32::try_from(unzigzag(r.varint()?)).map_err(|_| corrupt("status"))?;
        let ip = r.string()?;
        let latency_us = unzigzag(r.varint()?);
        let hash = hex::encode(r.take(HASH_LEN)?);
        records.push((
            RequestLogRecord {
                at,
                request_id,
                resource,
                result,
                status,
                ip,
                latency_us,
                hash,
                ..RequestLogRecord::default()
            },
            ids,
        ));
    }
    if r.pos != bytes.len() {
        return Err(corrupt("trailing bytes after the request log batch"));
    }
    Ok(records)
}

/// How many of a record's term ids the batch's term index lists: its organization, principal
/// and action (the filters of a search), not its user agent.
pub(super) const INDEXED_TERMS: usize = 3;

/// The batch's term index: the distinct ids of the indexed terms of `terms`, ascending, as a
/// count and the deltas between them (varints). A search skips a batch whose index lacks a
/// term it filters on.
pub(super) fn encode_index(terms: &[[i64; TERMS]]) -> Vec<u8> {
    let ids = index_of(terms);
    let mut out = Vec::with_capacity(1 + 2 * ids.len());
    varint(&mut out, ids.len() as u64);
    let mut prev = 0;
    for id in ids {
        varint(&mut out, zigzag(id - prev));
        prev = id;
    }
    out
}

/// The distinct indexed term ids of `terms`, ascending.
pub(super) fn index_of(terms: &[[i64; TERMS]]) -> Vec<i64> {
    let mut ids: Vec<i64> = terms
        .iter()
        .flat_map(|t| t.iter().take(INDEXED_TERMS).copied())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Reads a term index back.
pub(super) fn decode_index(bytes: &[u8]) -> Result<Vec<i64>> {
    let mut r = Reader { bytes, pos: 0 };
    let n = usize::try_from(r.varint()?).map_err(|_| corrupt("length"))?;
    // Each id takes at least one byte: a count beyond what is left is corrupt, not a reason
    // to allocate.
    if n > bytes.len() {
        return Err(corrupt("term index length"));
    }
    let mut ids = Vec::with_capacity(n);
    let mut prev: i64 = 0;
    for _ in 0..n {
        prev = prev
            .checked_add(unzigzag(r.varint()?))
            .ok_or_else(|| corrupt("term index"))?;
        ids.push(prev);
    }
    if r.pos != bytes.len() {
        return Err(corrupt("trailing bytes after the term index"));
    }
    Ok(ids)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("request log batch: {what}"))
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(|| corrupt("length"))?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| corrupt("truncated"))?;
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        self.take(1)?
            .first()
            .copied()
            .ok_or_else(|| corrupt("truncated"))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f)
                .checked_shl(shift)
                .ok_or_else(|| corrupt("varint"))?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("varint too long"))
    }

    fn string(&mut self) -> Result<String> {
        let n = usize::try_from(self.varint()?).map_err(|_| corrupt("length"))?;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| corrupt("a string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_index_lists_each_filtered_term_once_and_reads_back() {
        let terms = [[7, 3, 900, 4], [7, 5, 900, 4], [7, 3, 2, 1_000_000]];
        let bytes = encode_index(&terms);
        // The user agent (last) is not indexed.
        assert_eq!(decode_index(&bytes).unwrap(), [2, 3, 5, 7, 900]);
        assert_eq!(decode_index(&encode_index(&[])).unwrap(), Vec::<i64>::new());
        for cut in 0..bytes.len() {
            assert!(decode_index(&bytes[..cut]).is_err(), "{cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_index(&longer).is_err());
    }

    fn record(i: i64, request_id: String) -> RequestLogRecord {
        RequestLogRecord {
            at: 1_700_000_000_000 - i * 3,
            request_id,
            resource: format!("/v1/orgs/default/secrets/s{i}/data"),
            result: "allowed".into(),
            status: if i == 1 { -7 } else { 200 },
            ip: "2001:db8::1".into(),
            latency_us: i * 1_000_003,
            hash: hex::encode([i as u8; 32]),
            ..RequestLogRecord::default()
        }
    }

    #[test]
    fn batches_read_back_exactly() {
        let ids = [
            RequestId::generate().to_string(),
            "client chosen ✓".into(),
            // A `req_` id in a form that would not read back the same stays text.
            "REQ_0000000000000000000000000".into(),
            String::new(),
        ];
        let records: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| record(i as i64, id.clone()))
            .collect();
        let terms: Vec<_> = (0..4).map(|i| [i, i64::MAX, 1, 300 + i]).collect();
        let blob = encode(&records, &terms).unwrap();
        let back = decode(&blob).unwrap();
        assert_eq!(back.len(), 4);
        for ((r, t), (want, want_t)) in back.iter().zip(records.iter().zip(&terms)) {
            assert_eq!(r, want);
            assert_eq!(t, want_t);
        }
        // A `req_` id takes 17 bytes instead of 31.
        assert!(blob.len() < 4 * 130, "{}", blob.len());
    }

    /// Format 1 as written on 2026-12-06: later versions must keep reading it.
    #[test]
    fn format_1_is_pinned() {
        let a = RequestLogRecord {
            at: 1_070_000_000_000,
            request_id: format!("req_{}", "0".repeat(24) + "2w"),
            resource: "/v1/orgs/default/envs/dev/secrets".into(),
            result: "allowed".into(),
            status: 200,
            ip: "127.0.0.1".into(),
            latency_us: 10,
            hash: "ab".repeat(32),
            ..RequestLogRecord::default()
        };
        let b = RequestLogRecord {
            at: 1_069_999_999_997,
            request_id: "abc".into(),
            result: "routed".into(),
            status: 404,
            latency_us: 1,
            hash: "cd".repeat(32),
            ..RequestLogRecord::default()
        };
        let terms = [[0, 1, 1, 17], [1, 2, 3, 4]];
        let golden = GOLDEN_1.replace(char::is_whitespace, "");
        let encoded = hex::encode(encode(&[a.clone(), b.clone()], &terms).unwrap());
        assert_eq!(encoded, golden);
        let back = decode(&hex::decode(&golden).unwrap()).unwrap();
        assert_eq!(back, vec![(a, terms[0]), (b, terms[1])]);
    }

    const GOLDEN_1: &str = "\
        010280b0c28fa43e010000000000000000000000000000005c00020222212f76312f6f7267732f64\
        656661756c742f656e76732f6465762f7365637265747307616c6c6f7765649003093132372e302e\
        302e3114abababababababababababababababababababababababababababababababab05000361\
        6263020406080006726f75746564a8060002cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\
        cdcdcdcdcdcdcdcdcdcd";

    #[test]
    fn damaged_batches_are_errors_not_panics() {
        let records = vec![record(1, "req".into()), record(2, "x".into())];
        let blob = encode(&records, &[[1, 2, 3, 4], [5, 6, 7, 8]]).unwrap();
        for cut in 0..blob.len() {
            assert!(decode(blob.get(..cut).unwrap()).is_err(), "cut at {cut}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut huge = vec![FORMAT];
        varint(&mut huge, u64::MAX);
        assert!(decode(&huge).is_err());
        assert!(decode(&[2, 0]).is_err());
        assert!(decode(&[FORMAT, 0]).unwrap().is_empty());
        let bad_hash = RequestLogRecord {
            hash: "zz".into(),
            ..record(1, "r".into())
        };
        assert!(encode(&[bad_hash], &[[0; TERMS]]).is_err());
    }
}
