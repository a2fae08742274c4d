using System.Globalization;
using System.Text.Json.Serialization;
using System.Text.Json;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Checkpoints;

/// <summary>One file of a checkpoint generation: where it goes, what its bytes hash to, how it is mode'd.</summary>
public sealed record CheckpointFile(
    [property: JsonPropertyName("path")] string Path,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("size")] long Size,
    [property: JsonPropertyName("mode")] int Mode);

/// <summary>
/// One committed generation of a run: every file with its hash. Blobs are stored by hash, so the
/// manifest is the whole truth of a generation and restore can verify each byte against it.
/// </summary>
public sealed record CheckpointManifest(
    [property: JsonPropertyName("format")] int Format,
    [property: JsonPropertyName("run_key")] string RunKey,
    [property: JsonPropertyName("generation")] long Generation,
    [property: JsonPropertyName("job_id")] long JobId,
    [property: JsonPropertyName("committed_at")] DateTimeOffset CommittedAt,
    [property: JsonPropertyName("files")] IReadOnlyList<CheckpointFile> Files)
{
    public const int CurrentFormat = 1;

    /// <summary>The host whose agent committed it (config host_name); absent in manifests written before hosts were named.</summary>
    [JsonPropertyName("host")]
    public string? Host { get; init; }

    public long TotalBytes => Files.Sum(file => file.Size);

    public byte[] ToJson() => JsonSerializer.SerializeToUtf8Bytes(this, CheckpointJsonContext.Default.CheckpointManifest);

    /// <summary>
    /// Parses and checks a manifest read from the store. The store is outside this host's trust
    /// boundary (anyone with its credentials can write it), so every path is checked here, before
    /// restore creates anything: a manifest with one bad entry is refused whole.
    /// </summary>
    public static CheckpointManifest Parse(ReadOnlySpan<byte> json, string runKey, long generation)
    {
        CheckpointManifest? manifest;
        try
        {
            manifest = JsonSerializer.Deserialize(json, CheckpointJsonContext.Default.CheckpointManifest);
        }
        catch (JsonException error)
        {
            throw Refused(runKey, generation, $"it is not valid JSON ({error.Message})", error);
        }
        if (manifest is null || manifest.Files is null)
            throw Refused(runKey, generation, "it is empty");
        if (manifest.Format != CurrentFormat)
            throw Refused(runKey, generation, $"its format {manifest.Format} is not {CurrentFormat}");
        if (manifest.Generation != generation || manifest.RunKey != runKey)
            throw Refused(runKey, generation, $"it names run '{manifest.RunKey}' generation {manifest.Generation}");

        var paths = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in manifest.Files)
        {
            if (file is null)
                throw Refused(runKey, generation, "it has an empty file entry");
            if (CheckpointPaths.Problem(file.Path) is { } problem)
                throw Refused(runKey, generation, $"file '{Printable(file.Path)}' {problem}");
            if (file.Sha256 is null || file.Sha256.Length != 64 || !file.Sha256.All(char.IsAsciiHexDigitLower))
                throw Refused(runKey, generation, $"file '{file.Path}' has no lowercase hex SHA-256");
            if (file.Size < 0)
                throw Refused(runKey, generation, $"file '{file.Path}' has a negative size");
            if ((file.Mode & ~0x1FF) != 0)
                throw Refused(runKey, generation, $"file '{file.Path}' has mode {Convert.ToString(file.Mode, 8)}: only permission bits (0777) are restored, never setuid, setgid or sticky");
            if (!paths.Add(file.Path))
                throw Refused(runKey, generation, $"file '{file.Path}' appears twice");
        }
        // "a" as a file and "a/b" beside it cannot both exist: refuse rather than pick one.
        foreach (var path in paths)
        {
            for (var slash = path.IndexOf('/'); slash > 0; slash = path.IndexOf('/', slash + 1))
            {
                if (paths.Contains(path[..slash]))
                    throw Refused(runKey, generation, $"'{path[..slash]}' is both a file and the directory of '{path}'");
            }
        }
        return manifest with { Files = manifest.Files.OrderBy(file => file.Path, StringComparer.Ordinal).ToList() };
    }

    private static string Printable(string? path) =>
        path is null ? "(none)" : new string(path.Select(character => char.IsControl(character) ? '?' : character).ToArray());

    private static BuildFailureException Refused(string runKey, long generation, string reason, Exception? inner = null) =>
        new($"checkpoint generation {generation.ToString(CultureInfo.InvariantCulture)} of run '{runKey}' was refused: {reason}. Nothing was restored; pin another generation with CHECKPOINT_RESTORE, or turn restore off.", inner: inner);
}

// Unknown members are refused: a manifest that tries to describe a symlink, a device or an
// owner is not one this executor wrote, and nothing in it is restored.
[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull, UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow)]
[JsonSerializable(typeof(CheckpointManifest))]
[JsonSerializable(typeof(CheckpointAgentStatus))]
[JsonSerializable(typeof(LocalCommit))]
internal sealed partial class CheckpointJsonContext : JsonSerializerContext;
