//! Each meter's last batch, kept compact for the status page.
//!
//! The status page shows every meter's last batch, so the daemon keeps one per meter for as
//! long as it runs. Kept as it travels (a [`ReadingBatch`] with four labels and two strings
//! per value) that is 4–6 KiB a meter, and kept as its JSON (what an earlier version did) it
//! was still ~5 KiB: ~5 MB of a 256 MB gateway with 1,000 meters, for a page that is rarely
//! open. Here a value is 3 bytes plus its number's text (the texts of a batch are kept in one
//! string), the labels (quantity, unit, OBIS code, source) live once per distinct layout — in
//! practice once per profile —, evidence frames are kept as bytes, and the rare parts (text
//! values, reasons, meter times) are kept on the side. [`LastBatch::get`] gives back exactly
//! the batch that was kept.

use std::sync::Arc;

use crate::hex_input::to_hex;
use crate::reading::{ExactNumber, Label, Quality, ReadingBatch, ReadingValue, ValueData};

/// Longest number text kept inline; longer ones (20 significant digits and more) go on the
/// side.
const INLINE: usize = 21;

/// The labels of one value: the same in every batch of a meter's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ValueLabels {
    quantity: Label,
    unit: Label,
    obis: Option<Label>,
    source: Label,
}

impl ValueLabels {
    fn of(v: &ReadingValue) -> Self {
        Self {
            quantity: v.quantity.clone(),
            unit: v.unit.clone(),
            obis: v.obis.clone(),
            source: v.source.clone(),
        }
    }

    /// Whether `v` has these labels; `Arc<str>` compares pointers first, so labels shared
    /// from one profile compare in a few instructions.
    fn matches(&self, v: &ReadingValue) -> bool {
        self.quantity == v.quantity
            && self.unit == v.unit
            && self.obis == v.obis
            && self.source == v.source
    }
}

/// What a kept value's number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No value (bad).
    Null,
    /// A number whose text is inline.
    Inline,
    /// A text value or a long number, in [`Kept::extras`].
    Aside,
}

/// One value without its labels: 3 bytes. An inline number's text is in [`Kept::texts`], after
/// the texts of the inline numbers before it (in place, 21 bytes a value were mostly padding).
#[derive(Debug, Clone)]
struct KeptValue {
    len: u8,
    kind: Kind,
    quality: Quality,
}

/// The parts of a value that are rarely there.
#[derive(Debug, Clone)]
struct Extra {
    index: u32,
    value: Option<ValueData>,
    reason: Option<String>,
    meter_time: Option<String>,
}

/// One meter's last batch.
#[derive(Debug, Clone)]
struct Kept {
    gateway: Box<str>,
    id: Box<str>,
    meter: Box<str>,
    protocol: Box<str>,
    seq: u64,
    read_at: Box<str>,
    labels: Arc<[ValueLabels]>,
    values: Box<[KeptValue]>,
    /// The texts of the inline numbers, one after the other.
    texts: Box<str>,
    extras: Box<[Extra]>,
    frames: Box<[KeptFrame]>,
}

/// An evidence frame. Frames come as upper-case hex with single spaces (`to_hex`), three
/// characters a byte: kept as their bytes, a third of that (~0.2 MB with 1,000 meters), and
/// turned back into exactly the same text. Any other text is kept as it is.
#[derive(Debug, Clone)]
enum KeptFrame {
    Bytes(Box<[u8]>),
    Text(Box<str>),
}

impl KeptFrame {
    fn of(text: String) -> Self {
        match canonical_hex_bytes(&text) {
            Some(bytes) => KeptFrame::Bytes(bytes.into_boxed_slice()),
            None => KeptFrame::Text(text.into_boxed_str()),
        }
    }

    fn text(&self) -> String {
        match self {
            KeptFrame::Bytes(b) => to_hex(b),
            KeptFrame::Text(t) => t.to_string(),
        }
    }
}

/// The bytes of `text` if it is exactly what [`to_hex`] makes of them (`68 29 25`: upper-case
/// pairs, single spaces, nothing else), so that `to_hex` gives `text` back. Not
/// `hex_input::parse_hex`: that one accepts any way a person writes bytes, so it would need a
/// `to_hex` round trip to compare, three allocations per frame on the store path.
fn canonical_hex_bytes(text: &str) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let t = text.as_bytes();
    if t.is_empty() || !(t.len() + 1).is_multiple_of(3) {
        return None;
    }
    let mut bytes = Vec::with_capacity(t.len().div_ceil(3));
    // With 3n - 1 characters, every group is `HH ` but the last, which is `HH`.
    for group in t.chunks(3) {
        let (&hi, &lo) = (group.first()?, group.get(1)?);
        if group.get(2).is_some_and(|&sep| sep != b' ') {
            return None;
        }
        bytes.push(digit(hi)? << 4 | digit(lo)?);
    }
    Some(bytes)
}

/// One meter's last batch, if it has one.
#[derive(Debug, Clone, Default)]
pub struct LastBatch(Option<Kept>);

/// Label layouts shared between the meters' last batches.
#[derive(Debug, Clone, Default)]
pub struct Layouts(Vec<Arc<[ValueLabels]>>);

/// Past this many distinct layouts, ones no meter uses any more are forgotten.
const LAYOUTS_PRUNE: usize = 32;

impl Layouts {
    /// The shared layout of `values`: `current` (the meter's last one) when it matches, else a
    /// known one that does, else a new one.
    fn for_values(
        &mut self,
        values: &[ReadingValue],
        current: Option<&Arc<[ValueLabels]>>,
    ) -> Arc<[ValueLabels]> {
        let fits = |l: &Arc<[ValueLabels]>| {
            l.len() == values.len() && l.iter().zip(values).all(|(l, v)| l.matches(v))
        };
        if let Some(c) = current.filter(|c| fits(c)) {
            return c.clone();
        }
        if let Some(l) = self.0.iter().find(|l| fits(l)) {
            return l.clone();
        }
        if self.0.len() >= LAYOUTS_PRUNE {
            self.0.retain(|l| Arc::strong_count(l) > 1);
        }
        let l: Arc<[ValueLabels]> = values.iter().map(ValueLabels::of).collect();
        self.0.push(l.clone());
        l
    }
}

impl LastBatch {
    /// Keeps `batch`, taking its strings and frames out of it (the daemon drops it next).
    pub fn keep_taken(&mut self, batch: &mut ReadingBatch, layouts: &mut Layouts) {
        let labels = layouts.for_values(&batch.values, self.0.as_ref().map(|k| &k.labels));
        let mut values = Vec::with_capacity(batch.values.len());
        let mut texts = String::with_capacity(
            batch
                .values
                .iter()
                .filter_map(|v| match &v.value {
                    Some(ValueData::Number(n)) if n.as_str().len() <= INLINE => {
                        Some(n.as_str().len())
                    }
                    _ => None,
                })
                .sum(),
        );
        let mut extras = Vec::new();
        for (i, v) in batch.values.iter_mut().enumerate() {
            let mut kept = KeptValue {
                len: 0,
                kind: Kind::Null,
                quality: v.quality,
            };
            let mut aside = None;
            match v.value.take() {
                None => {}
                Some(ValueData::Number(n)) if n.as_str().len() <= INLINE => {
                    texts.push_str(n.as_str());
                    // Cannot truncate: at most INLINE (21) bytes.
                    kept.len = u8::try_from(n.as_str().len()).unwrap_or(u8::MAX);
                    kept.kind = Kind::Inline;
                }
                Some(other) => {
                    kept.kind = Kind::Aside;
                    aside = Some(other);
                }
            }
            if aside.is_some() || v.reason.is_some() || v.meter_time.is_some() {
                extras.push(Extra {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    value: aside,
                    reason: v.reason.take(),
                    meter_time: v.meter_time.take(),
                });
            }
            values.push(kept);
        }
        self.0 = Some(Kept {
            gateway: std::mem::take(&mut batch.gateway).into_boxed_str(),
            id: std::mem::take(&mut batch.id).into_boxed_str(),
            meter: batch.meter.as_str().into(),
            protocol: std::mem::take(&mut batch.protocol).into_boxed_str(),
            seq: batch.seq,
            read_at: std::mem::take(&mut batch.read_at).into_boxed_str(),
            labels,
            values: values.into_boxed_slice(),
            texts: texts.into_boxed_str(),
            extras: extras.into_boxed_slice(),
            frames: std::mem::take(&mut batch.frames)
                .into_iter()
                .map(KeptFrame::of)
                .collect(),
        });
    }

    /// Keeps a copy of `batch`.
    pub fn keep(&mut self, batch: &ReadingBatch, layouts: &mut Layouts) {
        self.keep_taken(&mut batch.clone(), layouts);
    }

    /// The kept batch, as it was kept.
    pub fn get(&self) -> Option<ReadingBatch> {
        let k = self.0.as_ref()?;
        let mut extras = k.extras.iter().peekable();
        let mut texts = k.texts.as_ref();
        let values = k
            .labels
            .iter()
            .zip(k.values.iter())
            .enumerate()
            .map(|(i, (l, v))| {
                let extra = extras
                    .next_if(|e| e.index == u32::try_from(i).unwrap_or(u32::MAX))
                    .cloned();
                let (aside, reason, meter_time) = match extra {
                    Some(e) => (e.value, e.reason, e.meter_time),
                    None => (None, None, None),
                };
                let value = match v.kind {
                    Kind::Null => None,
                    Kind::Inline => {
                        // Number texts are ASCII, so `len` is a char boundary.
                        let (t, rest) = texts
                            .split_at_checked(usize::from(v.len))
                            .unwrap_or((texts, ""));
                        texts = rest;
                        Some(ValueData::Number(ExactNumber::from_kept_text(t)))
                    }
                    Kind::Aside => aside,
                };
                ReadingValue {
                    quantity: l.quantity.clone(),
                    value,
                    unit: l.unit.clone(),
                    obis: l.obis.clone(),
                    source: l.source.clone(),
                    quality: v.quality,
                    reason,
                    meter_time,
                }
            })
            .collect();
        Some(ReadingBatch {
            schema: crate::reading::READING_SCHEMA.to_owned(),
            id: k.id.to_string(),
            gateway: k.gateway.to_string(),
            meter: k.meter.to_string(),
            protocol: k.protocol.to_string(),
            seq: k.seq,
            read_at: k.read_at.to_string(),
            values,
            frames: k.frames.iter().map(KeptFrame::text).collect(),
            tariff_blocks: Vec::new(),
            utc_offset: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn value(q: &str, v: Option<ValueData>, quality: Quality) -> ReadingValue {
        ReadingValue {
            quantity: q.into(),
            value: v,
            unit: "kWh".into(),
            obis: Some("1.8.0".into()),
            source: "modbus:fc04:0x0000:f32:abcd".into(),
            quality,
            reason: None,
            meter_time: None,
        }
    }

    fn batch() -> ReadingBatch {
        let mut b = ReadingBatch::new("gw", "m1", "modbus-tcp", 7, UNIX_EPOCH);
        b.values.push(value(
            "energy.active.import.total",
            Some(ValueData::Number(ExactNumber::from_kept_text("1234.56"))),
            Quality::Good,
        ));
        let mut bad = value("voltage.l1", None, Quality::Bad);
        bad.reason = Some("no reply".into());
        b.values.push(bad);
        let mut long = value(
            "energy.reactive.total",
            Some(ValueData::Number(ExactNumber::from_kept_text(
                "-123456789012345678.9012",
            ))),
            Quality::Suspect,
        );
        long.reason = Some("register went backwards".into());
        long.meter_time = Some("2026-11-27T10:00:00".into());
        b.values.push(long);
        b.values.push(value(
            "meter.number",
            Some(ValueData::Text("000012345678".into())),
            Quality::Good,
        ));
        b.values.push(value(
            "voltage.l2",
            Some(ValueData::Number(ExactNumber::from_kept_text("230.1"))),
            Quality::Good,
        ));
        b.values.push(value(
            "frequency",
            Some(ValueData::Number(ExactNumber::from_kept_text(
                "-0.000000000000000001",
            ))),
            Quality::Suspect,
        ));
        b.frames = vec!["01 04 00".into(), "01 04 02 00 01".into()];
        b
    }

    #[test]
    fn frames_are_kept_as_bytes_only_when_they_come_back_the_same() {
        for (text, as_bytes) in [
            ("68 29 25 07", true),
            ("01", true),
            ("", false),
            ("68 29 2", false),
            ("68 29 25 ", false),
            ("68  29", false),
            ("68 2a", false),
            ("0x68", false),
            ("68-29", false),
            ("68 29 ZZ", false),
        ] {
            let kept = KeptFrame::of(text.to_owned());
            assert_eq!(matches!(kept, KeptFrame::Bytes(_)), as_bytes, "{text:?}");
            assert_eq!(kept.text(), text);
        }
    }

    proptest::proptest! {
        #[test]
        fn any_frame_text_comes_back_the_same(bytes: Vec<u8>, text in "[0-9A-Fa-f x]{0,12}") {
            let hex = to_hex(&bytes);
            let kept = KeptFrame::of(hex.clone());
            proptest::prop_assert_eq!(matches!(kept, KeptFrame::Bytes(_)), !bytes.is_empty());
            proptest::prop_assert_eq!(kept.text(), hex);
            proptest::prop_assert_eq!(KeptFrame::of(text.clone()).text(), text);
        }
    }

    #[test]
    fn gives_back_exactly_the_batch_kept() {
        let want = batch();
        let mut layouts = Layouts::default();
        let mut kept = LastBatch::default();
        assert_eq!(kept.get(), None);
        kept.keep(&want, &mut layouts);
        assert_eq!(kept.get(), Some(want.clone()));
        let mut taken = want.clone();
        kept.keep_taken(&mut taken, &mut layouts);
        assert_eq!(kept.get(), Some(want));
        assert!(
            taken.frames.is_empty() && taken.id.is_empty(),
            "strings taken"
        );
    }

    #[test]
    fn meters_of_one_profile_share_one_layout() {
        let mut layouts = Layouts::default();
        let mut a = LastBatch::default();
        let mut b = LastBatch::default();
        a.keep(&batch(), &mut layouts);
        b.keep(&batch(), &mut layouts);
        let (la, lb) = (&a.0.as_ref().unwrap().labels, &b.0.as_ref().unwrap().labels);
        assert!(Arc::ptr_eq(la, lb));
        assert_eq!(layouts.0.len(), 1);
        // Another layout (one value less) is a new one; the old stays while in use.
        let mut short = batch();
        short.values.pop();
        b.keep(&short, &mut layouts);
        assert_eq!(layouts.0.len(), 2);
        assert_eq!(b.get(), Some(short));
    }

    #[test]
    fn unused_layouts_are_forgotten() {
        let mut layouts = Layouts::default();
        let mut m = LastBatch::default();
        for i in 0..(LAYOUTS_PRUNE * 3) {
            let mut b = batch();
            b.values[0].quantity = format!("q{i}").into();
            m.keep(&b, &mut layouts);
        }
        assert!(layouts.0.len() <= LAYOUTS_PRUNE + 1, "{}", layouts.0.len());
    }
}
