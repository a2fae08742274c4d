using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace GpuExecutor.HostFiles;

/// <summary>
/// sync_file_range(SYNC_FILE_RANGE_WRITE): starts writing a just-written range to disk without
/// waiting. Files written in big streams (a dataset object, a checkpoint snapshot) otherwise pile
/// up dirty pages until the kernel throttles every write, and leave the closing fsync with
/// gigabytes to do.
/// </summary>
public static partial class Writeback
{
    private const uint SyncFileRangeWrite = 2;

    /// <summary>Best effort: a failure only leaves the range to the kernel's own writeback.</summary>
    public static void Start(SafeFileHandle handle, long offset, long length)
    {
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            _ = SyncFileRange((int)handle.DangerousGetHandle(), offset, length, SyncFileRangeWrite);
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }

    [LibraryImport("libc", EntryPoint = "sync_file_range", SetLastError = true)]
    private static partial int SyncFileRange(int fileDescriptor, long offset, long length, uint flags);
}
