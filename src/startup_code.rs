//! Unmapping the daemon's start-up code once it runs.
//!
//! Starting the daemon runs code it will not run again until a reload: clap, the TOML and
//! configuration parsing with its located errors, profile loading, the request plans (about
//! 0.7 MB of `.text`, measured with a pagemap walk; docs/benchmarks.md, scenario 3). Those pages
//! stay mapped, and counted in the resident set, for the daemon's life. [`release`] drops this
//! process's mappings of its own executable's code pages once start-up is over, so that what
//! stays resident is the code the daemon actually runs: the pages it executes next are mapped
//! again on their first use (a minor fault; the file's pages are still in the page cache,
//! shared, and reclaimable like any cache). Nothing is lost: the code is read-only and
//! file-backed, so dropping the mapping discards no data (`MADV_DONTNEED` on a private mapping
//! never written to). The kernel refuses writes to a running executable (`ETXTBSY`), so the
//! pages mapped again are the same code.
//!
//! `meterd run` calls it once started and again after every SIGHUP reload, which runs the
//! parser and the profile loader again (`RunOptions::release_startup_code`).

use std::path::Path;

/// Drops this process's mappings of its executable's code pages (see the module doc).
/// Returns how many bytes of mappings were released; 0 where that is not possible (not
/// Linux, `/proc` unreadable).
pub fn release() -> usize {
    #[cfg(target_os = "linux")]
    {
        let (Ok(exe), Ok(maps)) = (
            std::fs::read_link("/proc/self/exe"),
            std::fs::read_to_string("/proc/self/maps"),
        ) else {
            return 0;
        };
        let mut released = 0;
        for (start, end) in code_ranges(&maps, &exe) {
            let len = end - start;
            // SAFETY: the range is a whole mapping of this executable's read-only code (from
            // /proc/self/maps, page-aligned). MADV_DONTNEED only drops the page table entries;
            // the next access maps the same file pages again. Nothing in this process writes
            // to or frees code.
            let r = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
            if r == 0 {
                released += len;
            }
        }
        released
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The `[start, end)` address ranges of `exe`'s executable, private mappings in a
/// `/proc/PID/maps` text. Lines that do not parse are skipped.
fn code_ranges(maps: &str, exe: &Path) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    for line in maps.lines() {
        // "start-end perms offset dev inode path"; the path may contain spaces.
        let mut fields = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let path = fields.nth(3).map(str::trim_start);
        if perms != "r-xp" || path.map(Path::new) != Some(exe) {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            && a < b
        {
            ranges.push((a, b));
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_code_mappings_are_chosen() {
        let maps = "\
55d0c0000000-55d0c0200000 r--p 00000000 08:01 1234  /usr/bin/meterd
55d0c0200000-55d0c0a00000 r-xp 00200000 08:01 1234  /usr/bin/meterd
55d0c0a00000-55d0c0c00000 r--p 00a00000 08:01 1234  /usr/bin/meterd
55d0c0c00000-55d0c0c10000 rw-p 00c00000 08:01 1234  /usr/bin/meterd
7f0000000000-7f0000200000 r-xp 00028000 08:01 99    /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000300000-7f0000400000 r-xp 00000000 08:01 55    /opt/my app/meterd
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0     [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0     [vdso]
garbage line
ffffffff-0 r-xp 0 0 0 /usr/bin/meterd
";
        assert_eq!(
            code_ranges(maps, Path::new("/usr/bin/meterd")),
            vec![(0x55d0_c020_0000, 0x55d0_c0a0_0000)]
        );
        assert_eq!(
            code_ranges(maps, Path::new("/opt/my app/meterd")),
            vec![(0x7f00_0030_0000, 0x7f00_0040_0000)]
        );
        assert!(code_ranges(maps, Path::new("/usr/bin/other")).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_running() {
        // This test binary's own code: everything after it still runs (pages map again).
        let n = release();
        if cfg!(target_os = "linux") {
            assert!(n > 0, "no code mapping of the test binary found");
        }
        assert_eq!(code_ranges("", Path::new("/x")), vec![]);
    }
}
