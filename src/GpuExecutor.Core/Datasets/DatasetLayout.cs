using GpuExecutor.Storage;

namespace GpuExecutor.Datasets;

/// <summary>An object that cannot be placed in a job's view, and why.</summary>
public sealed record QuarantinedObject(string Key, string Reason);

/// <summary>
/// Maps the object keys under a dataset's source to relative paths inside the job's view. Keys
/// that cannot be paths (<see cref="ObjectKeyPaths.IsSafeKey"/>), or "a" next to "a/b", are
/// quarantined (reported, never written), so nothing lands outside the view.
/// </summary>
public static class DatasetLayout
{
    /// <summary>
    /// Places every key found under a source: a prefix's objects keep their path below the
    /// prefix; a single object is placed under its own name. Keys ending in '/' are directory
    /// markers and are skipped. Returns the key-to-path map and what was quarantined.
    /// </summary>
    public static (IReadOnlyDictionary<string, string> Paths, IReadOnlyList<QuarantinedObject> Quarantined) Plan(DatasetSource source, IEnumerable<string> keys)
    {
        var paths = new Dictionary<string, string>(StringComparer.Ordinal);
        var quarantined = new List<QuarantinedObject>();
        foreach (var key in keys.Order(StringComparer.Ordinal))
        {
            if (key.EndsWith('/'))
                continue;
            string relative;
            if (!source.IsPrefix)
                relative = key == source.Key ? key[(key.LastIndexOf('/') + 1)..] : "";
            else
                relative = key.StartsWith(source.Key, StringComparison.Ordinal) ? key[source.Key.Length..] : "";
            if (relative == DatasetStreams.IndexFileName)
            {
                quarantined.Add(new QuarantinedObject(key, $"'{relative}' is the name of a streamed view's index"));
                continue;
            }
            if (relative.Length == 0 || !ObjectKeyPaths.IsSafeKey(relative, allowTrailingSlash: false))
            {
                quarantined.Add(new QuarantinedObject(key, relative.Length == 0 ? "not under the dataset's source" : "an empty, '.' or '..' path segment, a leading '/', or a control character"));
                continue;
            }
            paths[key] = relative;
        }

        // A path cannot be a file and a directory at once ("a" and "a/b"): the file gives way,
        // so the directory's contents stay whole.
        var directories = new HashSet<string>(StringComparer.Ordinal);
        foreach (var relative in paths.Values)
        {
            for (var slash = relative.IndexOf('/'); slash >= 0; slash = relative.IndexOf('/', slash + 1))
                directories.Add(relative[..slash]);
        }
        foreach (var (key, relative) in paths.Where(pair => directories.Contains(pair.Value)).ToList())
        {
            paths.Remove(key);
            quarantined.Add(new QuarantinedObject(key, $"'{relative}' is also a directory of the dataset"));
        }
        return (paths, quarantined);
    }
}
