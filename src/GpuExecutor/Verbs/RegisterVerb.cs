using System.ComponentModel;
using GpuExecutor.Configuration;
using GpuExecutor.Outcomes;
using GpuExecutor.Registration;

namespace GpuExecutor.Verbs;

/// <summary>
/// `register`: writes the runner's template for this executor config and runs (or, with
/// --dry-run, prints) `gitlab-runner register` with it. The token is read from an environment
/// variable, so it is in no argument of ours or of gitlab-runner's.
/// </summary>
public static class RegisterVerb
{
    public sealed record Request(string Url, string Name, string? Tags, string TokenVariable, string? TemplatePath, string GitLabRunner, bool DryRun,
        string? BuildsDir, string? CacheDir, long? GracefulKillTimeout);

    public static async Task RunAsync(VerbContext context, Request request, string configPath, TextWriter stdout)
    {
        if (!Uri.TryCreate(request.Url, UriKind.Absolute, out var url))
            throw new SystemFailureException($"--url '{request.Url}' is not a URL.");
        var tags = (request.Tags ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var executorConfig = Path.GetFullPath(configPath);
        var registration = new RegistrationRequest(url, request.Name, tags, executorConfig, Environment.ProcessPath ?? "/usr/bin/gpu-executor",
            request.BuildsDir, request.CacheDir, request.GracefulKillTimeout);
        var entry = RunnerRegistration.TemplateEntry(registration, context.Config);

        var token = context.Environment.Get(request.TokenVariable) is { Length: > 0 } value ? new Secret(value) : null;
        if (token is not null && !Secret.CanBeToken(token.Value))
            throw new SystemFailureException($"${request.TokenVariable} holds more than a token (whitespace or a line break).");
        if (token is null && !request.DryRun)
            throw new SystemFailureException($"no runner token: put the runner authentication token (glrt-…) in ${request.TokenVariable} (export {request.TokenVariable}=…), or pass --dry-run to see what would be done.");

        var templatePath = Path.GetFullPath(request.TemplatePath ?? Path.Combine(Path.GetDirectoryName(executorConfig)!, $"runner-{SafeFileName(request.Name)}.template.toml"));
        await File.WriteAllTextAsync(templatePath, RunnerRegistration.TemplateToml(entry), context.Stop);
        stdout.WriteLine($"wrote {templatePath}: builds_dir {entry.BuildsDir}, cache_dir {entry.CacheDir}, the four stages on {executorConfig}, graceful_kill_timeout {entry.GracefulKillTimeout} s");

        var authenticationToken = token is null || RunnerRegistration.IsAuthenticationToken(token.Value);
        var arguments = RunnerRegistration.RegisterArguments(registration, templatePath, authenticationToken);
        var shown = $"{RunnerRegistration.TokenEnvironmentVariable}=\"${request.TokenVariable}\" {request.GitLabRunner} {string.Join(' ', arguments.Select(ShellQuote))}";
        if (tags.Length > 0 && authenticationToken)
            stdout.WriteLine($"tags {string.Join(',', tags)}: a runner authentication token carries the tags GitLab gave the runner when it was made (Settings > CI/CD > Runners > New runner, or POST /user/runners with tag_list); set them there.");

        if (request.DryRun)
        {
            stdout.WriteLine("would run:");
            stdout.WriteLine($"  {shown}");
        }
        else
        {
            stdout.WriteLine($"running: {shown}");
            int exitCode;
            try
            {
                exitCode = await GitLabRunnerProgram.RunAsync(request.GitLabRunner, arguments, token!, line => stdout.WriteLine($"  gitlab-runner: {line}"), context.Stop);
            }
            catch (Exception error) when (error is Win32Exception or InvalidOperationException)
            {
                throw new SystemFailureException($"'{request.GitLabRunner}' cannot be started ({error.Message}): install GitLab Runner, or pass --gitlab-runner PATH.", error);
            }
            if (exitCode != 0)
                throw new SystemFailureException($"gitlab-runner register failed with exit code {exitCode}; its output is above.");
        }
        stdout.WriteLine($"next: gpu-executor --config {executorConfig} doctor --runner-config /etc/gitlab-runner/config.toml");
        stdout.WriteLine("several runners on one host (say 8 A100s and an L4): one executor config per runner, each with its own [gpus] pool and one shared state_dir, and one register per runner:");
        stdout.WriteLine("  gpu-executor --config /etc/gpu-executor/a100.toml register --url URL --name HOST-a100 --tags a100-x8");
        stdout.WriteLine("  gpu-executor --config /etc/gpu-executor/l4.toml register --url URL --name HOST-l4 --tags l4-x1");
    }

    private static string SafeFileName(string name) =>
        new(name.Select(character => char.IsAsciiLetterOrDigit(character) || character is '.' or '_' or '-' ? character : '-').ToArray());

    /// <summary>For the line shown to the admin only; the command itself is run from an argument array.</summary>
    private static string ShellQuote(string argument) =>
        argument.Length > 0 && argument.All(character => char.IsAsciiLetterOrDigit(character) || "-_./:,=@".Contains(character))
            ? argument
            : "'" + argument.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
}
