using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace GpuExecutor.HostFiles;

/// <summary>What lstat-style inspection says about a path, without following a final symlink.</summary>
/// <param name="ChangedNanoseconds">The inode's change time (ctime), which no one but the kernel sets: any write, chmod or utime moves it.</param>
public readonly record struct FileStatus(bool IsRegularFile, bool IsDirectory, ulong Inode, long Size, long ModifiedNanoseconds, int PermissionBits, long ChangedNanoseconds = 0);

/// <summary>
/// Reading files of a directory the job controls, as root, without being steered by it. The
/// job can swap any file or directory for a symlink at any moment, so checking first and opening
/// after is not enough: the open itself must refuse symlinks. openat2(RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS) does that for every component (Linux 5.6+); older kernels get
/// O_NOFOLLOW, which covers the last component, and a check that the opened file is regular.
/// statx has one layout on every architecture, unlike struct stat.
/// </summary>
public static partial class NoFollowFiles
{
    private const int AtFdCwd = -100;
    private const int AtSymlinkNoFollow = 0x100;
    private const int AtEmptyPath = 0x1000;
    private const uint StatxBasicStats = 0x7ff;
    private const int OpenReadOnly = 0;
    private const int OpenWriteOnly = 1;
    private const int OpenCreate = 0x40;
    private const int OpenExclusive = 0x80;
    private const int EEXIST = 17;
    private const int OpenNonBlock = 0x800;
    private const int OpenDirectory = 0x10000;
    private const int OpenNoFollow = 0x20000;
    private const int OpenCloseOnExec = 0x80000;
    private const ulong ResolveNoSymlinks = 0x04;
    private const ulong ResolveBeneath = 0x08;
    private const long SysOpenat2 = 437;
    private const int ENOSYS = 38;
    private const int StatxSize = 256;

    /// <summary>Status of <paramref name="path"/> itself (a symlink is reported as neither file nor directory); null if it does not exist.</summary>
    public static FileStatus? Lstat(string path) => Statx(AtFdCwd, path, AtSymlinkNoFollow);

    /// <summary>
    /// Opens <paramref name="relativePath"/> under <paramref name="root"/> for reading, refusing
    /// symlinks anywhere in the path and anything but a regular file. Null when that is what is
    /// there (or nothing is): the caller skips it.
    /// </summary>
    public static (SafeFileHandle Handle, FileStatus Status)? OpenRegularFile(string root, string relativePath)
    {
        using var rootHandle = Open(AtFdCwd, root, OpenReadOnly | OpenDirectory | OpenCloseOnExec);
        if (rootHandle is null)
            return null;
        var handle = OpenBeneath(rootHandle, relativePath);
        if (handle is null)
            return null;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (Statx((int)handle.DangerousGetHandle(), "", AtEmptyPath) is { IsRegularFile: true } status)
                return (handle, status);
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
        handle.Dispose();
        return null;
    }

    /// <summary>
    /// Copies an opened file into a new file at <paramref name="target"/> and hashes it with
    /// SHA-256 in the same pass: what a snapshot (before upload) and a restore (reusing a local
    /// file) both need. Returns the bytes copied and the lowercase hex hash.
    /// </summary>
    public static (long Bytes, string Sha256) CopyWithSha256(SafeFileHandle source, string target, bool startWriteback)
    {
        using var hash = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        // A file of more than one chunk is hashed on a thread of its own while the next chunk is
        // copied, so its copy takes about the longer of the two rather than their sum. A
        // dedicated thread, not the pool: restore runs four copies at once on pool threads that
        // block, and a hash waiting for the pool to grow stalled each file for a second. A file
        // of one chunk (most files of a many-file checkpoint) is hashed inline, with no thread.
        using var chunks = new System.Collections.Concurrent.BlockingCollection<(byte[] Buffer, int Length)>(boundedCapacity: 1);
        Task? hasher = null;
        (byte[] Buffer, int Length)? firstChunk = null;
        // Three pooled buffers: one being hashed, one waiting for the hasher, one being filled.
        var buffers = new byte[3][];
        for (var index = 0; index < buffers.Length; index++)
            buffers[index] = System.Buffers.ArrayPool<byte>.Shared.Rent(ChunkBytes);
        long copied = 0;
        try
        {
            using var output = File.OpenHandle(target, FileMode.CreateNew, FileAccess.Write, FileShare.None);
            for (var chunk = 0; ; chunk++)
            {
                var buffer = buffers[chunk % buffers.Length];
                var read = RandomAccess.Read(source, buffer.AsSpan(0, ChunkBytes), copied);
                if (read == 0)
                    break;
                RandomAccess.Write(output, buffer.AsSpan(0, read), copied);
                if (startWriteback)
                    Writeback.Start(output, copied, read);
                copied += read;
                if (chunk == 0)
                {
                    firstChunk = (buffer, read);
                    continue;
                }
                if (hasher is null)
                {
                    hasher = Task.Factory.StartNew(() =>
                    {
                        foreach (var (pending, length) in chunks.GetConsumingEnumerable())
                            hash.AppendData(pending, 0, length);
                    }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
                    chunks.Add(firstChunk!.Value);
                }
                chunks.Add((buffer, read));
            }
        }
        finally
        {
            // The hash and the buffers are never left in use past this method, even when a read
            // or write failed.
            chunks.CompleteAdding();
            hasher?.Wait();
            if (hasher is null && firstChunk is { } only)
                hash.AppendData(only.Buffer, 0, only.Length);
            foreach (var rented in buffers)
                System.Buffers.ArrayPool<byte>.Shared.Return(rented);
        }
        return (copied, Convert.ToHexStringLower(hash.GetHashAndReset()));
    }

    /// <summary>
    /// Writes <paramref name="contents"/> as <paramref name="fileName"/> in the directory
    /// <paramref name="directory"/> under <paramref name="root"/>, a tree the job controls:
    /// every existing component is opened with O_NOFOLLOW, so a symlink the job planted anywhere
    /// on the way stops the write instead of steering it; only the last directory is created when
    /// missing. The file is a new inode written beside its name and renamed over it, so a planted
    /// symlink or hard link at the name is replaced, never written through. Returns null when
    /// written, else why not.
    /// </summary>
    public static string? ReplaceFileBeneath(string root, IReadOnlyList<string> directory, string fileName, ReadOnlySpan<byte> contents)
    {
        var current = Open(AtFdCwd, root, OpenReadOnly | OpenDirectory | OpenCloseOnExec);
        if (current is null)
            return $"{root} cannot be opened (error {Marshal.GetLastPInvokeError()})";
        try
        {
            for (var index = 0; index < directory.Count; index++)
            {
                var name = directory[index];
                if (name is "" or "." or ".." || name.Contains('/') || name.Contains('\0'))
                    return $"'{name}' is not a directory name";
                var fd = Fd(current);
                if (index == directory.Count - 1 && MakeDirectoryAt(fd, name, 0x1ED) != 0 && Marshal.GetLastPInvokeError() != EEXIST)
                    return $"{name} cannot be created (error {Marshal.GetLastPInvokeError()})";
                var next = Open(fd, name, OpenReadOnly | OpenDirectory | OpenNoFollow | OpenCloseOnExec);
                if (next is null)
                    return $"{name} is not a directory (a symlink is not followed)";
                current.Dispose();
                current = next;
            }
            var directoryFd = Fd(current);
            var temporary = "." + fileName + ".tmp-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6));
            var created = OpenAt(directoryFd, temporary, OpenWriteOnly | OpenCreate | OpenExclusive | OpenNoFollow | OpenCloseOnExec, 0x1A4);
            if (created < 0)
                return $"{fileName} cannot be created (error {Marshal.GetLastPInvokeError()})";
            using (var file = new SafeFileHandle((nint)created, ownsHandle: true))
                RandomAccess.Write(file, contents, 0);
            if (RenameAt(directoryFd, temporary, directoryFd, fileName) == 0)
                return null;
            var error = Marshal.GetLastPInvokeError();
            UnlinkAt(directoryFd, temporary, 0);
            return $"{fileName} cannot be replaced (error {error}: a directory stands there?)";
        }
        finally
        {
            current.Dispose();
        }
    }

    /// <summary>The descriptor of a handle this class opened and still holds.</summary>
    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    private const int ChunkBytes = 4 << 20;

    private static SafeFileHandle? OpenBeneath(SafeFileHandle root, string relativePath)
    {
        var added = false;
        try
        {
            root.DangerousAddRef(ref added);
            var rootFd = (int)root.DangerousGetHandle();
            // O_NONBLOCK: a FIFO the job left must not hang the agent in open().
            var how = new OpenHow { Flags = (ulong)(OpenReadOnly | OpenNonBlock | OpenCloseOnExec | OpenNoFollow), Resolve = ResolveBeneath | ResolveNoSymlinks };
            var fd = SysCallOpenat2(SysOpenat2, rootFd, relativePath, ref how, (nuint)Marshal.SizeOf<OpenHow>());
            if (fd >= 0)
                return new SafeFileHandle((nint)fd, ownsHandle: true);
            if (Marshal.GetLastPInvokeError() != ENOSYS)
                return null;
            // Kernels before 5.6: no check of the intermediate directories beyond what the
            // enumeration (which skips symlinks) already did.
            return Open(rootFd, relativePath, OpenReadOnly | OpenNonBlock | OpenCloseOnExec | OpenNoFollow);
        }
        finally
        {
            if (added)
                root.DangerousRelease();
        }
    }

    private static SafeFileHandle? Open(int directoryFd, string path, int flags)
    {
        var fd = OpenAt(directoryFd, path, flags, 0);
        return fd >= 0 ? new SafeFileHandle((nint)fd, ownsHandle: true) : null;
    }

    private static FileStatus? Statx(int directoryFd, string path, int flags)
    {
        Span<byte> buffer = stackalloc byte[StatxSize];
        if (StatxCall(directoryFd, path, flags, StatxBasicStats, ref MemoryMarshal.GetReference(buffer)) != 0)
            return null;
        var mode = BitConverter.ToUInt16(buffer[28..30]);
        var type = mode & 0xF000;
        var modifiedSeconds = BitConverter.ToInt64(buffer[112..120]);
        var modifiedNanos = BitConverter.ToUInt32(buffer[120..124]);
        var changedSeconds = BitConverter.ToInt64(buffer[96..104]);
        var changedNanos = BitConverter.ToUInt32(buffer[104..108]);
        return new FileStatus(
            IsRegularFile: type == 0x8000,
            IsDirectory: type == 0x4000,
            Inode: BitConverter.ToUInt64(buffer[32..40]),
            Size: BitConverter.ToInt64(buffer[40..48]),
            ModifiedNanoseconds: modifiedSeconds * 1_000_000_000 + modifiedNanos,
            PermissionBits: mode & 0x1FF,
            ChangedNanoseconds: changedSeconds * 1_000_000_000 + changedNanos);
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct OpenHow
    {
        public ulong Flags;
        public ulong Mode;
        public ulong Resolve;
    }

    [LibraryImport("libc", EntryPoint = "statx", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int StatxCall(int directoryFd, string path, int flags, uint mask, ref byte statx);

    [LibraryImport("libc", EntryPoint = "openat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenAt(int directoryFd, string path, int flags, uint mode);

    [LibraryImport("libc", EntryPoint = "mkdirat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int MakeDirectoryAt(int directoryFd, string path, uint mode);

    [LibraryImport("libc", EntryPoint = "renameat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int RenameAt(int fromDirectoryFd, string from, int toDirectoryFd, string to);

    [LibraryImport("libc", EntryPoint = "unlinkat", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int UnlinkAt(int directoryFd, string path, int flags);

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SysCallOpenat2(long number, int directoryFd, string path, ref OpenHow how, nuint size);
}
