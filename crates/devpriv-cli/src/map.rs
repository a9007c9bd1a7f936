//! The layout of a device-private address space, as text and as SVG.
//!
//! Kernel: none (model only). It draws what `mt_dump()` of
//! `device_private_pgmap_tree` would list: each pagemap's range, the gaps
//! between them, and how the section index sees each section.

use devpriv_core::{PAGE_SHIFT, PageCount};
use devpriv_pagemap::DevicePrivateSpace;
use std::fmt::Write as _;

/// One stretch of the address space, in bytes.
///
/// Kernel: none (model only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A mapped pagemap's range.
    Pagemap {
        /// `DevPagemap::id`.
        id: u64,
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Free space between (or before) pagemaps.
    Gap {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
}

impl Segment {
    /// `(start, end)`, inclusive.
    pub fn bounds(&self) -> (u64, u64) {
        match *self {
            Segment::Pagemap { start, end, .. } | Segment::Gap { start, end } => (start, end),
        }
    }

    fn pages(&self) -> u64 {
        let (s, e) = self.bounds();
        (e - s + 1) >> PAGE_SHIFT
    }
}

/// A snapshot of a space's layout.
///
/// Kernel: none (model only).
#[derive(Clone, Debug)]
pub struct Layout {
    /// Pagemaps and gaps in address order, up to the last pagemap.
    pub segments: Vec<Segment>,
    /// The space's size in bytes.
    pub space_size: u64,
    /// log2 of the section size in bytes.
    pub section_shift: u32,
    /// Sections with two or more pagemaps (their lookups walk the tree).
    pub shared_sections: u64,
    /// Sections with exactly one pagemap.
    pub single_sections: u64,
}

impl Layout {
    /// Reads the layout of `space` under one read section.
    ///
    /// Kernel: none (model only).
    pub fn of(space: &DevicePrivateSpace) -> Layout {
        let cfg = space.config();
        let g = space.read();
        let mut segments = Vec::new();
        let mut next = 0u64;
        // Section → number of pagemaps in it, counted from the ranges.
        let mut per_section = std::collections::BTreeMap::<u64, u32>::new();
        for pm in g.pagemaps() {
            let r = pm.range();
            let (start, end) = (r.start().get(), r.end().get());
            if start > next {
                segments.push(Segment::Gap {
                    start: next,
                    end: start - 1,
                });
            }
            segments.push(Segment::Pagemap {
                id: pm.id(),
                start,
                end,
            });
            for s in start >> cfg.section_shift..=end >> cfg.section_shift {
                *per_section.entry(s).or_default() += 1;
            }
            next = end.saturating_add(1);
        }
        let shared = per_section.values().filter(|&&n| n > 1).count() as u64;
        Layout {
            segments,
            space_size: cfg.space_size(),
            section_shift: cfg.section_shift,
            shared_sections: shared,
            single_sections: per_section.len() as u64 - shared,
        }
    }

    /// The first byte after the last pagemap.
    fn used_end(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.bounds().1 + 1)
    }

    /// A table of the segments, then the free remainder and the section
    /// counts.
    ///
    /// Kernel: none (model only).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "device-private address space: {} bytes (2^{}), sections of {} KiB",
            self.space_size,
            self.space_size.trailing_zeros(),
            (1u64 << self.section_shift) >> 10
        );
        for seg in &self.segments {
            let (s, e) = seg.bounds();
            let what = match seg {
                Segment::Pagemap { id, .. } => format!("pagemap {id}"),
                Segment::Gap { .. } => "gap".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {s:#014x}..={e:#014x}  {what:<12} {:>9} pages",
                seg.pages()
            );
        }
        let rest = self.space_size - self.used_end();
        let _ = writeln!(
            out,
            "  {:#014x}..               free to the end ({} pages)",
            self.used_end(),
            rest >> PAGE_SHIFT
        );
        let _ = writeln!(
            out,
            "  sections: {} with one pagemap (index fast path), {} shared (tree walk)",
            self.single_sections, self.shared_sections
        );
        out
    }

    /// An SVG strip of the used part of the space: pagemaps coloured by
    /// id, gaps grey, section boundaries as ticks when there are few.
    ///
    /// Kernel: none (model only).
    pub fn to_svg(&self) -> String {
        const W: f64 = 1000.0;
        const H: f64 = 60.0;
        let end = self.used_end().max(1);
        #[expect(clippy::cast_precision_loss, reason = "a drawing")]
        let x = |b: u64| b as f64 / end as f64 * W;
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="monospace" font-size="11">"#,
            W + 20.0,
            H + 60.0
        );
        let _ = writeln!(
            out,
            r#"<text x="10" y="14">device-private address space, bytes 0..{end:#x} of {:#x}</text>"#,
            self.space_size
        );
        for seg in &self.segments {
            let (s, e) = seg.bounds();
            let (x0, w) = (10.0 + x(s), (x(e + 1) - x(s)).max(0.5));
            let (fill, label) = match seg {
                Segment::Pagemap { id, .. } => (
                    format!("hsl({}, 60%, 55%)", (id * 47) % 360),
                    format!("pagemap {id}"),
                ),
                Segment::Gap { .. } => ("#ddd".to_owned(), "gap".to_owned()),
            };
            let _ = writeln!(
                out,
                r#"<rect x="{x0:.2}" y="24" width="{w:.2}" height="{H}" fill="{fill}" stroke="white" stroke-width="0.3"><title>{label}: {s:#x}..={e:#x} ({} pages)</title></rect>"#,
                seg.pages()
            );
        }
        let section = 1u64 << self.section_shift;
        let sections = end.div_ceil(section);
        if sections <= 256 {
            for i in 0..=sections {
                let xs = 10.0 + x((i * section).min(end));
                let _ = writeln!(
                    out,
                    r##"<line x1="{xs:.2}" y1="{}" x2="{xs:.2}" y2="{}" stroke="#333" stroke-width="0.5"/>"##,
                    24.0 + H,
                    30.0 + H
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="10" y="{}">{} pagemaps; sections: {} single, {} shared; ticks: section boundaries</text>"#,
            H + 48.0,
            self.segments
                .iter()
                .filter(|s| matches!(s, Segment::Pagemap { .. }))
                .count(),
            self.single_sections,
            self.shared_sections
        );
        out.push_str("</svg>\n");
        out
    }

    /// Pages in pagemaps.
    ///
    /// Kernel: none (model only).
    pub fn mapped_pages(&self) -> PageCount {
        PageCount::new(
            self.segments
                .iter()
                .filter(|s| matches!(s, Segment::Pagemap { .. }))
                .map(Segment::pages)
                .sum(),
        )
    }
}
