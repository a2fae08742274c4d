using System.Text.RegularExpressions;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Storage;

namespace GpuExecutor.Datasets;

/// <summary>Where a dataset comes from: a store named in the config, a bucket, and a key prefix or one object key.</summary>
/// <param name="Key">"" for the whole bucket, a prefix ending in '/', or one object's key.</param>
public sealed record DatasetSource(string Store, string Bucket, string Key)
{
    public bool IsPrefix => Key.Length == 0 || Key.EndsWith('/');

    public override string ToString() => $"{Store}://{Bucket}/{Key}";
}

/// <summary>How a dataset reaches the job: whole before its first script, or streamed while it runs.</summary>
public enum DatasetMode
{
    /// <summary>Every object is in the view before the job's first script runs.</summary>
    Prefetch,

    /// <summary>The job starts once the first objects are in; the rest arrive while it runs, each whole and verified.</summary>
    Stream,
}

/// <summary>One line of the job's DATASETS variable.</summary>
/// <param name="EtagPin">Set by "etag=…": the object must have this ETag, or the job fails.</param>
public sealed record DatasetMount(DatasetSource Source, string ContainerPath, string? EtagPin, int Line)
{
    /// <summary>Set by "mode=stream" or "mode=prefetch" (the default).</summary>
    public DatasetMode Mode { get; init; } = DatasetMode.Prefetch;

    /// <summary>Set by "order=PATH": an object of the streamed dataset that lists its paths in the order the job reads them.</summary>
    public string? OrderFile { get; init; }
}

/// <summary>
/// Reads the job's DATASETS variable: one "SOURCE -> CONTAINER_PATH [etag=ETAG] [mode=stream
/// [order=PATH]]" per line, '#' comments and blank lines ignored. The variable is the job's, so it is untrusted: every line is
/// checked against the config, and anything wrong is a build failure naming the line and the rule.
/// </summary>
public static partial class DatasetDeclaration
{
    public const string Variable = "DATASETS";
    private const int MaximumLines = 256;
    private const int MaximumLength = 64 * 1024;

    /// <summary>Directories a dataset must never be mounted over or under.</summary>
    private static readonly string[] ReservedPaths = ["/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/usr", "/run", "/tmp"];

    [GeneratedRegex(@"^(?<store>[a-z][a-z0-9-]{0,31})://(?<bucket>[a-z0-9][a-z0-9.-]{1,62})(?:/(?<key>.*))?$")]
    private static partial Regex SourceSyntax();

    [GeneratedRegex(@"^etag=(?<etag>""?[0-9A-Za-z-]{1,64}""?)$")]
    private static partial Regex PinSyntax();

    [GeneratedRegex(@"^mode=(?<mode>stream|prefetch)$")]
    private static partial Regex ModeSyntax();

    [GeneratedRegex(@"^order=(?<path>\S{1,1024})$")]
    private static partial Regex OrderSyntax();

    public static IReadOnlyList<DatasetMount> Parse(string text, ExecutorConfig config)
    {
        if (text.Length > MaximumLength)
            throw Fail(0, $"is {text.Length} characters long; at most {MaximumLength} are read.");
        var mounts = new List<DatasetMount>();
        var lines = text.Split('\n');
        if (lines.Length > MaximumLines)
            throw Fail(0, $"has {lines.Length} lines; at most {MaximumLines} are read.");

        for (var index = 0; index < lines.Length; index++)
        {
            var lineNumber = index + 1;
            var line = lines[index].Trim();
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            var arrow = line.IndexOf("->", StringComparison.Ordinal);
            if (arrow < 0 || line.IndexOf("->", arrow + 2, StringComparison.Ordinal) >= 0)
                throw Fail(lineNumber, "is not \"SOURCE -> CONTAINER_PATH\", for example \"s3://bucket/imagenet/train/ -> /data/imagenet\".");

            var source = ParseSource(line[..arrow].Trim(), lineNumber, config);
            var target = line[(arrow + 2)..].Trim().Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (target.Length is 0 or > 4)
                throw Fail(lineNumber, "must name one container path, optionally followed by etag=ETAG, mode=stream or mode=prefetch, and order=PATH.");
            var path = CheckContainerPath(target[0], lineNumber, config, mounts);
            string? etag = null;
            DatasetMode? mode = null;
            string? order = null;
            foreach (var option in target.Skip(1))
            {
                if (ModeSyntax().Match(option) is { Success: true } modeMatch && mode is null)
                {
                    mode = modeMatch.Groups["mode"].Value == "stream" ? DatasetMode.Stream : DatasetMode.Prefetch;
                    continue;
                }
                if (OrderSyntax().Match(option) is { Success: true } orderMatch && order is null)
                {
                    order = orderMatch.Groups["path"].Value;
                    if (!ObjectKeyPaths.IsSafeKey(order, allowTrailingSlash: false))
                        throw Fail(lineNumber, $"order file '{Shorten(order)}' is not a path inside the dataset: no empty, '.' or '..' segment, leading '/' or control character.");
                    continue;
                }
                if (PinSyntax().Match(option) is not { Success: true } pin || etag is not null)
                    throw Fail(lineNumber, $"'{Shorten(option)}' is not an option; use etag=ETAG, mode=stream or order=PATH (each at most once).");
                if (source.IsPrefix)
                    throw Fail(lineNumber, "an etag pin names one object's version; it cannot apply to a prefix.");
                etag = pin.Groups["etag"].Value.Trim('"');
            }
            if (order is not null && (mode != DatasetMode.Stream || !source.IsPrefix))
                throw Fail(lineNumber, "order=PATH names the order in which a streamed prefix arrives; it needs mode=stream and a source ending in '/'.");
            mounts.Add(new DatasetMount(source, path, etag, lineNumber) { Mode = mode ?? DatasetMode.Prefetch, OrderFile = order });
        }
        return mounts;
    }

    private static DatasetSource ParseSource(string text, int line, ExecutorConfig config)
    {
        if (SourceSyntax().Match(text) is not { Success: true } match)
            throw Fail(line, $"source '{Shorten(text)}' is not STORE://BUCKET/KEY, for example s3://bucket/imagenet/train/.");
        var source = new DatasetSource(match.Groups["store"].Value, match.Groups["bucket"].Value, match.Groups["key"].Value);
        if (!ObjectKeyPaths.IsSafeKey(source.Key, allowTrailingSlash: true))
            throw Fail(line, $"source key '{Shorten(source.Key)}' has an empty, '.' or '..' segment, or a control character.");
        if (!config.Stores.TryGetValue(source.Store, out var store))
        {
            var known = config.Stores.Count == 0 ? "none" : string.Join(", ", config.Stores.Keys.Order());
            throw Fail(line, $"store '{source.Store}' is not configured on this runner (configured stores: {known}).");
        }
        if (!store.Allow.Any(rule => Admits(rule, source)))
            throw Fail(line, $"'{source}' is not allowed: it is outside every rule of stores.{store.Name}.allow [{string.Join(", ", store.Allow.Select(rule => $"\"{rule}\""))}].");
        return source;
    }

    /// <summary>A rule "bucket" admits the whole bucket; "bucket/prefix" admits what lies under that path.</summary>
    public static bool Admits(string rule, DatasetSource source)
    {
        var slash = rule.IndexOf('/');
        var bucket = slash < 0 ? rule : rule[..slash];
        if (bucket != source.Bucket)
            return false;
        if (slash < 0)
            return true;
        var prefix = rule[(slash + 1)..];
        // Path-wise, not string-wise: "datasets" must not admit "datasets-private/".
        var directory = prefix.EndsWith('/') ? prefix : prefix + "/";
        return source.Key == prefix || source.Key.StartsWith(directory, StringComparison.Ordinal);
    }

    private static string CheckContainerPath(string path, int line, ExecutorConfig config, List<DatasetMount> earlier)
    {
        if (!path.StartsWith('/') || path.Length > 1024 || path.Any(char.IsControl))
            throw Fail(line, $"container path '{Shorten(path)}' must be absolute.");
        var segments = path.Split('/', StringSplitOptions.RemoveEmptyEntries);
        if (segments.Length == 0 || segments.Any(segment => segment is "." or ".."))
            throw Fail(line, $"container path '{Shorten(path)}' must be a directory below '/' without '.' or '..'.");
        var normalized = "/" + string.Join('/', segments);

        foreach (var (name, reserved) in new[] { ("the builds directory", config.Builds.ContainerDir), ("the cache directory", config.Cache.ContainerDir), ("the checkpoint directory", config.Checkpoints.ContainerDir) }
                     .Concat(ReservedPaths.Select(reserved => ("a system directory", reserved))))
        {
            if (ContainerPaths.Overlap(normalized, reserved))
                throw Fail(line, $"container path '{normalized}' overlaps {name} ({reserved}).");
        }
        foreach (var other in earlier)
        {
            if (ContainerPaths.Overlap(normalized, other.ContainerPath))
                throw Fail(line, $"container path '{normalized}' overlaps the dataset of line {other.Line} ({other.ContainerPath}).");
        }
        return normalized;
    }

    private static BuildFailureException Fail(int line, string problem) =>
        new(line == 0 ? $"{Variable} {problem}" : $"{Variable} line {line}: {problem}");

    /// <summary>A job's own text in an error: cut, and control characters (NUL, escapes, newlines) shown as '?'.</summary>
    private static string Shorten(string value) => GpuExecutor.JobLog.Printable.Of(value, 80);
}
