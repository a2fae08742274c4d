using System.Text;

namespace GpuExecutor.Storage;

/// <summary>
/// Which object keys can be relative paths on a host. Object stores allow keys that a file
/// system must not take: "../x", "/etc/passwd", "a//b", NUL bytes. The file store and the
/// dataset views both refuse such keys, so nothing lands outside their directories.
/// </summary>
public static class ObjectKeyPaths
{
    public const int MaximumSegmentBytes = 255;
    private const int MaximumPathBytes = 4096;

    /// <summary>Whether a key (or key prefix, with a trailing '/') has only plain, non-empty segments.</summary>
    public static bool IsSafeKey(string key, bool allowTrailingSlash)
    {
        if (key.Length == 0)
            return true;
        if (Encoding.UTF8.GetByteCount(key) > MaximumPathBytes || key.Any(char.IsControl))
            return false;
        var segments = key.Split('/');
        if (allowTrailingSlash && segments[^1].Length == 0)
            segments = segments[..^1];
        return segments.All(segment => segment.Length > 0 && segment is not ("." or "..") && Encoding.UTF8.GetByteCount(segment) <= MaximumSegmentBytes);
    }
}
