using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;

namespace GpuExecutor.Registration;

/// <summary>What `register` was asked: the runner's name and tags, and the overrides an admin may give.</summary>
public sealed record RegistrationRequest(
    Uri GitLabUrl,
    string Name,
    IReadOnlyList<string> Tags,
    string ExecutorConfigPath,
    string Binary,
    string? BuildsDir = null,
    string? CacheDir = null,
    long? GracefulKillTimeout = null);

/// <summary>
/// `register`: the runner's side of the registration, written for the admin so that it agrees
/// with the executor config by construction, and checked (<see cref="RunnerEntry.DisagreementsWith"/>)
/// where the admin overrode something. The runner authentication token reaches gitlab-runner in
/// its environment (CI_SERVER_TOKEN), never in an argument, so no process title shows it.
/// </summary>
public static partial class RunnerRegistration
{
    public const string TokenEnvironmentVariable = "CI_SERVER_TOKEN";

    /// <summary>The runner's own default wait after SIGKILL; enough for a process that is already dying.</summary>
    public const long ForceKillTimeout = 10;

    public static RunnerEntry TemplateEntry(RegistrationRequest request, ExecutorConfig config)
    {
        if (request.GitLabUrl.Scheme is not ("https" or "http") || !request.GitLabUrl.IsAbsoluteUri)
            throw new SystemFailureException($"--url '{request.GitLabUrl}' is not an http(s) URL of a GitLab instance.");
        if (request.Name.Length == 0 || request.Name.Any(char.IsControl))
            throw new SystemFailureException("--name must be a non-empty name without control characters.");
        foreach (var tag in request.Tags)
        {
            if (!TagPattern().IsMatch(tag))
                throw new SystemFailureException($"tag '{tag}' is not a tag: letters, digits, '.', '_', ':', '-', at most 100 characters.");
        }
        var arguments = RunnerEntry.Stages.ToDictionary(stage => stage, stage => (IReadOnlyList<string>)["--config", request.ExecutorConfigPath, stage], StringComparer.Ordinal);
        var entry = new RunnerEntry(
            request.Name,
            "custom",
            request.BuildsDir ?? config.Builds.ContainerDir,
            request.CacheDir ?? config.Cache.ContainerDir,
            RunnerEntry.Stages.ToDictionary(stage => stage, _ => request.Binary, StringComparer.Ordinal),
            arguments,
            request.GracefulKillTimeout ?? (long)config.Run.RunnerGracefulKillTimeout.TotalSeconds,
            ForceKillTimeout)
        {
            // The runner's default fits the default budget; a larger budget needs a larger limit.
            OutputLimitKiB = (config.Logs.JobLogBudgetBytes + RunnerEntry.JobLogHeadroomBytes) / 1024 + 1 is var needed && needed > RunnerEntry.DefaultOutputLimitKiB ? needed : null,
        };
        var problems = entry.DisagreementsWith(config);
        if (problems.Count > 0)
            throw new SystemFailureException($"refusing to register runner '{request.Name}': it would disagree with {request.ExecutorConfigPath}:\n" +
                string.Join("\n", problems.Select(problem => $"  - {problem.Problem}\n    fix: {problem.Fix}")));
        return entry;
    }

    /// <summary>The template for gitlab-runner's --template-config: the [[runners]] keys this executor needs, and nothing secret.</summary>
    public static string TemplateToml(RunnerEntry entry)
    {
        var text = new StringBuilder();
        text.AppendLine("# Written by `gpu-executor register`: GitLab Runner merges it into the entry it registers.");
        text.AppendLine("[[runners]]");
        text.AppendLine("  executor = \"custom\"");
        text.AppendLine($"  builds_dir = {Quote(entry.BuildsDir!)}");
        text.AppendLine($"  cache_dir = {Quote(entry.CacheDir!)}");
        if (entry.OutputLimitKiB is { } outputLimit)
        {
            text.AppendLine("  # KiB of job log the runner sends: more than logs.job_log_budget, which fills it with the steps' output.");
            text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"  output_limit = {outputLimit}"));
        }
        text.AppendLine("  [runners.custom]");
        foreach (var stage in RunnerEntry.Stages)
        {
            text.AppendLine($"    {stage}_exec = {Quote(entry.Execs[stage])}");
            text.AppendLine($"    {stage}_args = [{string.Join(", ", entry.Args[stage].Select(Quote))}]");
        }
        text.AppendLine("    # SIGTERM to SIGKILL: longer than run.stop_grace_seconds + checkpoints.final_commit_wait_seconds,");
        text.AppendLine("    # so that a cancelled job's last checkpoint is committed before the runner kills the executor.");
        text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"    graceful_kill_timeout = {entry.GracefulKillTimeout}"));
        text.AppendLine(string.Create(CultureInfo.InvariantCulture, $"    force_kill_timeout = {entry.ForceKillTimeout}"));
        return text.ToString();
    }

    /// <summary>
    /// gitlab-runner register's arguments. A runner authentication token (glrt-) carries the tags
    /// GitLab gave the runner when it was created, and the runner refuses --tag-list with one; a
    /// legacy registration token takes them here.
    /// </summary>
    public static IReadOnlyList<string> RegisterArguments(RegistrationRequest request, string templatePath, bool authenticationToken)
    {
        var arguments = new List<string>
        {
            "register", "--non-interactive",
            "--url", request.GitLabUrl.AbsoluteUri.TrimEnd('/'),
            "--executor", "custom",
            "--name", request.Name,
            "--template-config", templatePath,
        };
        if (!authenticationToken && request.Tags.Count > 0)
            arguments.AddRange(["--tag-list", string.Join(',', request.Tags)]);
        return arguments;
    }

    public static bool IsAuthenticationToken(string token) => token.StartsWith("glrt-", StringComparison.Ordinal);

    /// <summary>A TOML basic string: quotes, backslashes and control characters escaped.</summary>
    private static string Quote(string value)
    {
        var text = new StringBuilder("\"");
        foreach (var character in value)
        {
            text.Append(character switch
            {
                '"' => "\\\"",
                '\\' => "\\\\",
                _ when char.IsControl(character) => string.Create(CultureInfo.InvariantCulture, $"\\u{(int)character:X4}"),
                _ => character.ToString(),
            });
        }
        return text.Append('"').ToString();
    }

    [GeneratedRegex("^[A-Za-z0-9._:-]{1,100}$")]
    private static partial Regex TagPattern();
}
