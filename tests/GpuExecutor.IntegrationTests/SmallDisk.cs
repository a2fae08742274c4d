namespace GpuExecutor.IntegrationTests;

/// <summary>
/// A small filesystem of its own for a directory, as a full host disk would be: a tmpfs mounted
/// there for the test's length (mounting needs root, which the test command has).
/// </summary>
public sealed class SmallDisk : IAsyncDisposable
{
    public string Directory { get; }

    private SmallDisk(string directory) => Directory = directory;

    public static async Task<SmallDisk?> MountAsync(string directory, int mebibytes)
    {
        System.IO.Directory.CreateDirectory(directory);
        var (status, _, error) = await Testbed.RunAsync("mount", ["-t", "tmpfs", "-o", $"size={mebibytes}m", "tmpfs", directory], null, "/");
        if (status == 0)
            return new SmallDisk(directory);
        Testbed.Missing($"mounting a {mebibytes} MiB tmpfs needs root: {error.Trim()}");
        return null;
    }

    /// <summary>Gives the filesystem room again: what a full host's admin would do.</summary>
    public Task GrowAsync(int mebibytes) => Testbed.RunAsync("mount", ["-o", $"remount,size={mebibytes}m", Directory], null, "/");

    public async ValueTask DisposeAsync() => await Testbed.RunAsync("umount", ["-l", Directory], null, "/");
}
