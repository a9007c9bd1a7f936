//! What `validate()` of a space or a pagemap reports.
//!
//! Kernel: none (model only); `mt_validate()` for the tree part.

use crate::sparse::Slot;
use std::fmt;
use std::ops::RangeInclusive;

/// What [`DevicePrivateSpace::validate`] or [`DevPagemap::validate`] found
/// wrong: the first broken invariant. Pagemaps are named by
/// [`DevPagemap::id`], byte ranges are inclusive.
///
/// Kernel: none (model only); the tree part is `mt_validate()`'s.
///
/// [`DevicePrivateSpace::validate`]: super::DevicePrivateSpace::validate
/// [`DevPagemap::validate`]: super::DevPagemap::validate
/// [`DevPagemap::id`]: super::DevPagemap::id
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValidateError {
    /// The space's range tree is malformed.
    Tree(devpriv_rangetree::ValidateError),
    /// A pagemap's pages array does not hold `nr_pages` pages.
    PagesLen {
        /// The pagemap.
        pgmap: u64,
        /// Pages in the array.
        pages: usize,
        /// Its `nr_pages`.
        nr_pages: u64,
    },
    /// A pagemap's byte range is not `nr_pages` pages long.
    RangeLen {
        /// The pagemap.
        pgmap: u64,
        /// Its range.
        range: RangeInclusive<u64>,
        /// Its `nr_pages`.
        nr_pages: u64,
    },
    /// A pagemap's first offset is not its range's start in pages.
    FirstOffset {
        /// The pagemap.
        pgmap: u64,
    },
    /// A pagemap's tree entry is not its own range (plus the padding its
    /// packing reserves).
    TreeRange {
        /// The pagemap.
        pgmap: u64,
        /// The tree entry's range.
        tree: RangeInclusive<u64>,
    },
    /// A pagemap's tree entry runs past the end of the space.
    BeyondSpace {
        /// The pagemap.
        pgmap: u64,
    },
    /// A pagemap that `memunmap` finished is still in the tree.
    UnmappedInTree {
        /// The pagemap.
        pgmap: u64,
    },
    /// A section's memmap base or bounds are not what its pagemap's would
    /// be (`section_mem_map` out of step).
    StaleBase {
        /// The section.
        section: u64,
        /// The pagemap its slot names.
        pgmap: u64,
        /// The base address and bounds word found.
        have: (usize, u64),
        /// Those the pagemap gives.
        want: (usize, u64),
    },
    /// The section index and the tree disagree about a section.
    IndexSlot {
        /// The section.
        section: u64,
        /// What the index says.
        index: SectionSlot,
        /// What the tree says.
        tree: SectionSlot,
    },
    /// An offset's entry in the per-page pagemap array does not name the
    /// pagemap that holds it (`pgmap_array` out of step).
    PgmapArray {
        /// The pagemap.
        pgmap: u64,
        /// The first offset whose entry differs.
        offset: u64,
    },
    /// The index has occupied slots in sections no pagemap covers.
    Occupied {
        /// Occupied slots in the index.
        index: u64,
        /// Sections the tree's pagemaps cover.
        covered: u64,
    },
}

/// What a section of the index names, in a [`ValidateError`].
///
/// Kernel: none (model only; `mem_section` in spirit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionSlot {
    /// No pagemap.
    Empty,
    /// One pagemap, by id.
    One(u64),
    /// Several pagemaps, by id in address order (the slot holds a table
    /// of their sub-ranges).
    Shared(Vec<u64>),
}

impl SectionSlot {
    pub(crate) fn of(slot: &Slot<'_>) -> Self {
        match slot {
            Slot::Empty => SectionSlot::Empty,
            Slot::One(pm) => SectionSlot::One(pm.id()),
            Slot::Shared(pms) => SectionSlot::Shared(pms.iter().map(|pm| pm.id()).collect()),
        }
    }
}

impl fmt::Display for SectionSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectionSlot::Empty => f.write_str("empty"),
            SectionSlot::One(id) => write!(f, "pagemap {id}"),
            SectionSlot::Shared(ids) => write!(f, "shared by pagemaps {ids:?}"),
        }
    }
}

impl fmt::Display for ValidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValidateError::Tree(e) => e.fmt(f),
            ValidateError::PagesLen {
                pgmap,
                pages,
                nr_pages,
            } => write!(f, "pagemap {pgmap}: {pages} pages but nr_pages {nr_pages}"),
            ValidateError::RangeLen {
                pgmap,
                range,
                nr_pages,
            } => write!(
                f,
                "pagemap {pgmap}: range {range:#x?} is not {nr_pages} pages"
            ),
            ValidateError::FirstOffset { pgmap } => write!(
                f,
                "pagemap {pgmap}: first offset out of step with the range"
            ),
            ValidateError::TreeRange { pgmap, tree } => write!(
                f,
                "pagemap {pgmap}: tree range {tree:#x?} differs from its own"
            ),
            ValidateError::BeyondSpace { pgmap } => {
                write!(f, "pagemap {pgmap}: beyond the space")
            }
            ValidateError::UnmappedInTree { pgmap } => {
                write!(f, "pagemap {pgmap}: unmapped but still in the tree")
            }
            ValidateError::StaleBase {
                section,
                pgmap,
                have,
                want,
            } => write!(
                f,
                "section {section} (pagemap {pgmap}): memmap base and bounds \
                 ({:#x}, {:#x}), expected ({:#x}, {:#x})",
                have.0, have.1, want.0, want.1
            ),
            ValidateError::IndexSlot {
                section,
                index,
                tree,
            } => write!(f, "section {section}: index says {index}, tree says {tree}"),
            ValidateError::PgmapArray { pgmap, offset } => write!(
                f,
                "pagemap {pgmap}: pgmap array entry of offset {offset:#x} names another"
            ),
            ValidateError::Occupied { index, covered } => write!(
                f,
                "index has {index} occupied sections, the tree covers {covered}"
            ),
        }
    }
}

impl std::error::Error for ValidateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ValidateError::Tree(e) => Some(e),
            _ => None,
        }
    }
}

impl From<devpriv_rangetree::ValidateError> for ValidateError {
    fn from(e: devpriv_rangetree::ValidateError) -> Self {
        ValidateError::Tree(e)
    }
}
