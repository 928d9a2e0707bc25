//! The daemon's use of memory: one arena of the C allocator (glibc on Linux), free memory
//! handed back after the few requests that walk a large store, and the start-up code's pages
//! given back once start-up is over (Linux). Elsewhere these do nothing.
//!
//! Why: glibc gives every thread that allocates an arena of its own and keeps each at its
//! peak, and keeps freed pages inside its heap until it is trimmed. With a store of 100k
//! jobs, a listing on one runtime thread and the start-up check on another left ~70 MiB
//! resident where one arena holds ~50; a trim after a listing gives back what the listing's
//! pages of `JobInfo`s and their frames used (bench/README.md, "Memory with 100k jobs").
//! Nothing on the byte path allocates per byte, so the shared arena's lock costs nothing
//! measurable there (the unthrottled benchmark runs with it).

/// One malloc arena for the whole process. Call first thing in `main`, before any thread.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // One libc call with constant arguments, while single-threaded.
pub fn use_one_arena() {
    // SAFETY: mallopt only sets one of the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// One malloc arena for the whole process (nothing to do with this allocator).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn use_one_arena() {}

/// Hand the allocator's free pages back to the system, after a request that walked a large
/// store. Blocking (it walks the heap, about a millisecond for 64 MiB): run it off the
/// runtime's threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // One libc call with a constant argument.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only returns unused pages of the heap; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hand the allocator's free pages back to the system (nothing to do with this allocator).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}

/// [`release_free_memory`] on a blocking thread, not waiting for it.
pub fn release_free_memory_soon() {
    tokio::task::spawn_blocking(release_free_memory);
}

/// Set by the `mdld` binary ([`page_out_code_after_startup`]).
static PAGE_OUT_CODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Have [`startup_done`] page out this executable's code. The `mdld` binary calls it first
/// thing; a test process that runs daemons in-process does not, and keeps its code resident.
pub fn page_out_code_after_startup() {
    PAGE_OUT_CODE.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Start-up is over (the store is open, the start-up check of completed files done): hand
/// the free heap back and, when [`page_out_code_after_startup`] asked for it, drop from the
/// resident set the pages of the executable's code and read-only data, on a blocking thread.
///
/// Why: start-up runs code that an idle daemon never runs again (argument and config
/// parsing, the store's recovery, the first scans), and the kernel maps a binary's code in
/// 64 KiB windows around each page touched, so an idle daemon kept ~6 MiB of its binary
/// resident. The pages are clean copies of the file: a later request reads back what it
/// runs (bench/README.md "Idle memory").
pub fn startup_done() {
    tokio::task::spawn_blocking(|| {
        release_free_memory();
        if PAGE_OUT_CODE.load(std::sync::atomic::Ordering::Relaxed) {
            page_out_own_code();
        }
    });
}

/// Ask the kernel to reclaim the resident pages of the executable's read-only mappings.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)] // madvise over mappings read from /proc/self/maps.
fn page_out_own_code() {
    let (Ok(exe), Ok(maps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/maps"),
    ) else {
        return;
    };
    for (start, end) in read_only_mappings_of(&maps, &exe) {
        // SAFETY: MADV_PAGEOUT changes only which pages are resident, never what the memory
        // holds: the range is a mapping of the executable that is not writable, whose pages
        // are read back from the file when next touched. A kernel without the advice (before
        // 5.4) answers EINVAL, and the pages stay.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT);
        }
    }
}

/// Nothing to page out on this system.
#[cfg(not(target_os = "linux"))]
fn page_out_own_code() {}

/// The address ranges of `exe`'s mappings that are not writable, from the text of
/// `/proc/self/maps` (`start-end perms offset dev inode path`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn read_only_mappings_of(maps: &str, exe: &std::path::Path) -> Vec<(usize, usize)> {
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let perms = fields.next()?;
            let path = fields.nth(3)?.trim_start();
            if path != exe.as_os_str() || perms.as_bytes().get(1) != Some(&b'-') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let start = usize::from_str_radix(start, 16).ok()?;
            let end = usize::from_str_radix(end, 16).ok()?;
            (start < end).then_some((start, end))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_executables_read_only_mappings_are_paged_out() {
        let maps = "\
55d0a0000000-55d0a0205000 r--p 00000000 fd:01 1234   /opt/mdl bin/mdld
55d0a0205000-55d0a0b2b000 r-xp 00205000 fd:01 1234   /opt/mdl bin/mdld
55d0a0b2b000-55d0a0b68000 r--p 00b2a000 fd:01 1234   /opt/mdl bin/mdld
55d0a0b68000-55d0a0b6c000 rw-p 00b67000 fd:01 1234   /opt/mdl bin/mdld
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0      [heap]
7f0000000000-7f0000026000 r--p 00000000 fd:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000026000-7f000017c000 r-xp 00026000 fd:01 99     /usr/lib/x86_64-linux-gnu/libc.so.6
7f1000000000-7f1000001000 r-xp 00000000 fd:01 77     /opt/mdl bin/mdld-old
not a mapping line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]
";
        let ranges = read_only_mappings_of(maps, std::path::Path::new("/opt/mdl bin/mdld"));
        assert_eq!(
            ranges,
            vec![
                (0x55d0a0000000, 0x55d0a0205000),
                (0x55d0a0205000, 0x55d0a0b2b000),
                (0x55d0a0b2b000, 0x55d0a0b68000),
            ]
        );
        assert!(read_only_mappings_of(maps, std::path::Path::new("/elsewhere")).is_empty());
    }
}
