//! The contract crate's only unsafe code: adopting raw fds the kernel handed us.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Takes ownership of fds just received through SCM_RIGHTS.
pub(crate) fn adopt(raw: &[RawFd]) -> Vec<OwnedFd> {
    raw.iter()
        // SAFETY: each fd was installed in our table by this recvmsg call and nothing
        // else refers to it yet, so this is its one owner.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect()
}

/// Takes ownership of an fd inherited at a fixed number (the worker's IPC fd 3, or a
/// systemd `LISTEN_FDS` fd).
///
/// # Safety
/// `fd` must be open and owned by nobody else in this process.
pub unsafe fn adopt_inherited(fd: RawFd) -> OwnedFd {
    // SAFETY: guaranteed by the caller.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A shared, writable mapping of a memfd, as a slice of atomics.
pub(crate) struct SharedSlots {
    ptr: std::ptr::NonNull<std::sync::atomic::AtomicU32>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through atomics.
unsafe impl Send for SharedSlots {}
// SAFETY: as above; atomics are Sync.
unsafe impl Sync for SharedSlots {}

impl SharedSlots {
    pub(crate) fn map(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> std::io::Result<SharedSlots> {
        use nix::sys::mman::{mmap, MapFlags, ProtFlags};
        let bytes = std::num::NonZeroUsize::new(len * 4).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty mapping")
        })?;
        // SAFETY: a fresh shared mapping of a memfd we hold; no other Rust object aliases
        // it, and every access goes through AtomicU32 (4-byte aligned: page aligned).
        let ptr = unsafe {
            mmap(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )
        }
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        Ok(SharedSlots {
            ptr: ptr.cast(),
            len,
        })
    }

    pub(crate) fn slots(&self) -> &[std::sync::atomic::AtomicU32] {
        // SAFETY: the mapping holds `len` AtomicU32s and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedSlots {
    fn drop(&mut self) {
        // SAFETY: unmapping the region mapped in `map`; no reference outlives `self`.
        let _ = unsafe { nix::sys::mman::munmap(self.ptr.cast(), self.len * 4) };
    }
}
