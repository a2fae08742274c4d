using System.Runtime.InteropServices;

namespace GpuExecutor.HostFiles;

/// <summary>link(2): .NET has symlinks but no hard links. Both callers (dataset views, checkpoint snapshots) need a second name for an immutable file without copying it.</summary>
public static partial class HardLinks
{
    /// <summary>0 on success, otherwise the errno.</summary>
    public static int Create(string existing, string link) => Link(existing, link) == 0 ? 0 : Marshal.GetLastPInvokeError();

    [LibraryImport("libc", EntryPoint = "link", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Link(string existing, string link);
}
