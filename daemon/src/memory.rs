//! The daemon's use of the C allocator (glibc on Linux): one arena, and free memory handed
//! back after the few requests that walk a large store. Elsewhere these do nothing.
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
