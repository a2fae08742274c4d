namespace GpuExecutor.HostFiles;

/// <summary>
/// One host-wide exclusive lock, an flock(2) on a file in the state directory (what .NET's
/// FileShare.None takes on Unix). The kernel drops it when the holder dies, so it cannot go stale.
/// </summary>
public sealed class HostLock : IDisposable
{
    private readonly FileStream _file;

    private HostLock(FileStream file) => _file = file;

    public static async Task<HostLock> AcquireAsync(string path, CancellationToken cancellationToken)
    {
        while (true)
        {
            try
            {
                return new HostLock(new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
            }
            catch (DirectoryNotFoundException)
            {
                // Only the first lock on a host needs this; a mkdir each time would contend on
                // the parent directory when many fetches take their locks at once.
                Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            }
            catch (IOException)
            {
                // Held by another prepare; choose-and-create takes milliseconds.
                await Task.Delay(TimeSpan.FromMilliseconds(20), cancellationToken);
            }
        }
    }

    /// <summary>
    /// The lock if it is free now, else null: for asking whether its holder is still alive, or
    /// (with <paramref name="create"/>) for taking it without waiting. Without create, a lock
    /// file that does not exist counts as held: there is nothing to ask about.
    /// </summary>
    public static HostLock? TryAcquire(string path, bool create = false)
    {
        try
        {
            return new HostLock(new FileStream(path, create ? FileMode.OpenOrCreate : FileMode.Open, FileAccess.ReadWrite, FileShare.None));
        }
        catch (IOException)
        {
            return null;
        }
    }

    public void Dispose() => _file.Dispose();
}
