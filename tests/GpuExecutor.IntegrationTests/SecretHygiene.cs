using System.Text.Json;
using System.Text.RegularExpressions;

namespace GpuExecutor.IntegrationTests;

/// <summary>
/// Secret hygiene (issue 18), checked in every <see cref="ExecutorWorkspace"/> as it is disposed:
/// every secret the test configured (store keys, GitLab tokens in the config; MLflow tokens and
/// other secret-named variables in its jobs) is searched for in everything the executor printed
/// (job logs, the executor's stderr, verb output) and every log it wrote: everything under
/// state_dir (the agent, fetcher and sampler logs, the host's whole step logs, gzipped or not,
/// the metrics) and every *.log and *.json elsewhere in the workspace (the admin log, the
/// simulator's results), the inputs that hold the secrets by design excepted. A job
/// container's own log is its stages' output, which is the job log searched here. The builds
/// directories are the jobs' own files, not logs: a job given the store's credentials by the
/// admin may write them there.
/// </summary>
internal static partial class SecretHygiene
{
    public static void AssertNoneLeaked(string root, string configPath, IEnumerable<(string Where, string Text)> outputs)
    {
        if (!Directory.Exists(root))
            return;
        var inputs = Directory.EnumerateFiles(root, "job-*.json").Where(path => !path.EndsWith(".result.json", StringComparison.Ordinal)).Append(configPath).ToHashSet();
        var secrets = inputs.SelectMany(SecretsIn).Where(secret => secret.Length >= 8).Distinct().ToList();
        if (secrets.Count == 0)
            return;

        var hits = new List<string>();
        foreach (var (where, text) in outputs)
            hits.AddRange(secrets.Where(secret => text.Contains(secret, StringComparison.Ordinal)).Select(secret => $"{Shown(secret)} in {where}"));
        var stateDir = Path.Combine(root, "state") + "/";
        foreach (var path in Directory.EnumerateFiles(root, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = FileAttributes.ReparsePoint, IgnoreInaccessible = true }))
        {
            var isLog = path.StartsWith(stateDir, StringComparison.Ordinal) || path.EndsWith(".log", StringComparison.Ordinal) || path.EndsWith(".log.gz", StringComparison.Ordinal) || path.EndsWith(".json", StringComparison.Ordinal);
            if (!isLog || inputs.Contains(path) || new FileInfo(path).Length > 64L << 20)
                continue;
            string text;
            try
            {
                text = Read(path);
            }
            catch (Exception error) when (error is IOException or UnauthorizedAccessException or InvalidDataException)
            {
                continue;
            }
            hits.AddRange(secrets.Where(secret => text.Contains(secret, StringComparison.Ordinal)).Select(secret => $"{Shown(secret)} in {Path.GetRelativePath(root, path)}"));
        }
        Assert.True(hits.Count == 0, "configured secrets reached logs or files:\n" + string.Join('\n', hits));
    }

    private static string Read(string path)
    {
        if (!path.EndsWith(".gz", StringComparison.Ordinal))
            return File.ReadAllText(path);
        using var gzip = new System.IO.Compression.GZipStream(File.OpenRead(path), System.IO.Compression.CompressionMode.Decompress);
        using var reader = new StreamReader(gzip);
        return reader.ReadToEnd();
    }

    /// <summary>Enough of a secret to tell which it is, never the whole of it.</summary>
    private static string Shown(string secret) => $"'{secret[..4]}…' ({secret.Length} characters)";

    private static IEnumerable<string> SecretsIn(string path)
    {
        var text = File.ReadAllText(path);
        if (!path.EndsWith(".json", StringComparison.Ordinal))
            return SecretKey().Matches(text).Select(match => match.Groups[2].Value);
        // A simulated job: its variables whose names say they are secret.
        using var job = JsonDocument.Parse(text);
        if (!job.RootElement.TryGetProperty("variables", out var variables) || variables.ValueKind != JsonValueKind.Object)
            return [];
        return variables.EnumerateObject()
            .Where(variable => SecretName().IsMatch(variable.Name) && variable.Value.ValueKind == JsonValueKind.String)
            .Select(variable => variable.Value.GetString()!)
            .ToList();
    }

    [GeneratedRegex(@"(?m)^\s*(secret_access_key|session_token|token|password)\s*=\s*""([^""]+)""")]
    private static partial Regex SecretKey();

    [GeneratedRegex("TOKEN|SECRET|PASSWORD", RegexOptions.IgnoreCase)]
    private static partial Regex SecretName();
}
