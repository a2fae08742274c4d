using System.Text;
using System.Text.Json;
using GpuExecutor.HostFiles;

namespace GpuExecutor.AdminLog;

/// <summary>
/// The admin log: state_dir/log/events.jsonl, one JSON line per verb call, appended under a
/// host-wide lock by every runner and detached process on the host, and rotated by size
/// (events.jsonl.1 is the newest old file, up to <see cref="KeptFiles"/> of them).
/// </summary>
public static class EventLog
{
    public const string DirectoryName = "log";
    public const string FileName = "events.jsonl";
    public const long MaxBytes = 16 * 1024 * 1024;
    public const int KeptFiles = 4;

    public static string DirectoryOf(string stateDir) => Path.Combine(stateDir, DirectoryName);
    public static string PathOf(string stateDir) => Path.Combine(DirectoryOf(stateDir), FileName);

    /// <summary>
    /// Appends one event. The log is a report, never a reason to fail a job: a state_dir that
    /// cannot be written loses the line (and `doctor` says why), the verb's outcome stands.
    /// </summary>
    public static bool TryAppend(string stateDir, AdminEvent record, long maxBytes = MaxBytes)
    {
        try
        {
            var directory = DirectoryOf(stateDir);
            if (!Directory.Exists(directory))
                Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
            var line = JsonSerializer.SerializeToUtf8Bytes(record, AdminLogJsonContext.Default.AdminEvent);
            var path = PathOf(stateDir);
            // Many processes append at once (every stage of every job, agents, fetchers); the
            // lock keeps lines whole and rotation from renaming a file under a writer. It is held
            // for microseconds, but a holder can be frozen (SIGSTOP, a stuck disk): the line is
            // lost after a bounded wait, never the verb's time.
            using var wait = new CancellationTokenSource(LockWait);
            using var hostLock = HostLock.AcquireAsync(Path.Combine(directory, ".events.lock"), wait.Token).GetAwaiter().GetResult();
            if (new FileInfo(path) is { Exists: true } existing && existing.Length + line.Length + 1 > maxBytes)
                Rotate(path);
            using var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, bufferSize: 0);
            file.Write(line);
            file.Write("\n"u8);
            return true;
        }
        catch (Exception error) when (error is IOException or UnauthorizedAccessException or OperationCanceledException)
        {
            return false;
        }
    }

    /// <summary>The longest a verb waits for another writer's lock before it gives up its line.</summary>
    public static readonly TimeSpan LockWait = TimeSpan.FromSeconds(2);

    private static void Rotate(string path)
    {
        File.Delete($"{path}.{KeptFiles}");
        for (var index = KeptFiles - 1; index >= 1; index--)
        {
            if (File.Exists($"{path}.{index}"))
                File.Move($"{path}.{index}", $"{path}.{index + 1}");
        }
        File.Move(path, $"{path}.1");
    }

    /// <summary>Every event, oldest first, across the rotated files; a line that does not parse (a torn tail after a crash) is skipped.</summary>
    public static IEnumerable<AdminEvent> ReadAll(string stateDir)
    {
        var path = PathOf(stateDir);
        for (var index = KeptFiles; index >= 0; index--)
        {
            var file = index == 0 ? path : $"{path}.{index}";
            if (!File.Exists(file))
                continue;
            foreach (var line in ReadLines(file))
            {
                if (Parse(line) is { } record)
                    yield return record;
            }
        }
    }

    public static AdminEvent? Parse(string line)
    {
        try
        {
            return line.Length == 0 ? null : JsonSerializer.Deserialize(line, AdminLogJsonContext.Default.AdminEvent);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    private static IEnumerable<string> ReadLines(string file)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        while (reader.ReadLine() is { } line)
            yield return line;
    }

    /// <summary>
    /// `events --follow`: the events appended from now on, as they come, across rotations (a
    /// rotated file is finished first, then the new one read from its start), until cancelled.
    /// </summary>
    public static async IAsyncEnumerable<AdminEvent> FollowAsync(string stateDir, TimeSpan poll, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken)
    {
        var path = PathOf(stateDir);
        long offset = File.Exists(path) ? new FileInfo(path).Length : 0;
        var pending = new List<byte>();
        var buffer = new byte[64 * 1024];
        while (!cancellationToken.IsCancellationRequested)
        {
            var info = new FileInfo(path);
            if (info.Exists && info.Length < offset)
            {
                // Rotated: the new file starts from nothing.
                offset = 0;
                pending.Clear();
            }
            if (info.Exists && info.Length > offset)
            {
                using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
                {
                    stream.Seek(offset, SeekOrigin.Begin);
                    int read;
                    while ((read = await stream.ReadAsync(buffer, cancellationToken)) > 0)
                    {
                        offset += read;
                        pending.AddRange(buffer.AsSpan(0, read));
                    }
                }
                // Only whole lines: a writer's line may be half there.
                var end = pending.LastIndexOf((byte)'\n');
                if (end >= 0)
                {
                    var text = Encoding.UTF8.GetString(pending.GetRange(0, end).ToArray());
                    pending.RemoveRange(0, end + 1);
                    foreach (var line in text.Split('\n'))
                    {
                        if (Parse(line) is { } record)
                            yield return record;
                    }
                }
            }
            try
            {
                await Task.Delay(poll, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                yield break;
            }
        }
    }
}
