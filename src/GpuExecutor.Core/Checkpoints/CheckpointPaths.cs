using System.Text;

namespace GpuExecutor.Checkpoints;

/// <summary>
/// Which relative paths a checkpoint may hold, and which files are not part of one: what both
/// commit (reading a directory the job wrote) and restore (reading a manifest from the store)
/// must agree on.
/// </summary>
public static class CheckpointPaths
{
    /// <summary>The file a trainer creates, in the checkpoint directory, to say "what is here is complete".</summary>
    public const string CompleteMarker = ".checkpoint-complete";

    /// <summary>Names that say "still being written": never committed, whatever else the directory holds.</summary>
    public static bool LooksInProgress(string name) =>
        name.EndsWith(".tmp", StringComparison.Ordinal)
        || name.EndsWith(".partial", StringComparison.Ordinal)
        || name.EndsWith("-unfinished", StringComparison.Ordinal)
        || name == CompleteMarker;

    /// <summary>Null when <paramref name="path"/> is a safe relative path; otherwise why not.</summary>
    public static string? Problem(string? path)
    {
        if (string.IsNullOrEmpty(path))
            return "has an empty path";
        if (path.Length > 4096)
            return "has a path longer than 4096 characters";
        if (path[0] == '/')
            return "has an absolute path";
        if (path.Any(char.IsControl))
            return "has a control character (NUL, newline, …) in its path";
        foreach (var segment in path.Split('/'))
        {
            if (segment.Length == 0)
                return "has an empty path segment ('//' or a trailing '/')";
            if (segment is "." or "..")
                return "has a '.' or '..' segment";
            if (Encoding.UTF8.GetByteCount(segment) > 255)
                return "has a name longer than 255 bytes";
        }
        return null;
    }
}
