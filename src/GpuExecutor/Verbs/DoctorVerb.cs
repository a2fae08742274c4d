using System.Text.Json;
using GpuExecutor.AdminLog;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Doctor;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>
/// `doctor [--runner-config PATH] [--json]`: one line per check (<see cref="HostDoctor"/>), and
/// exit <see cref="ExitCodes.FindingsExitCode"/> when any failed, so configuration management can
/// gate a host on it. A config that does not parse is itself the first failed check.
/// </summary>
public static class DoctorVerb
{
    public static async Task<int> RunAsync(string configPath, string? runnerConfigPath, bool json, IRunnerEnvironment environment, TextWriter stdout, CancellationToken stop)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var findings = new List<DoctorFinding>();
        ExecutorConfig? config = null;
        try
        {
            config = ConfigLoader.LoadFile(configPath);
            findings.Add(new("config", DoctorStatus.Pass, $"{configPath} parses (gpu-executor {VersionInfo.Version})"));
        }
        catch (SystemFailureException error)
        {
            findings.Add(new("config", DoctorStatus.Fail, error.Message, $"fix {configPath}: config.toml.example documents every key"));
        }

        if (config is not null)
        {
            using var adapters = new CompositionRoot(config, Path.GetFullPath(configPath));
            var doctor = new HostDoctor(config, adapters.Containers, adapters.Gpus, adapters.Stores,
                settings => CompositionRoot.GitLab(settings, _ => { }), ConfigLoader.LoadFile);
            findings.AddRange(await doctor.CheckAsync(runnerConfigPath, Environment.ProcessPath ?? "gpu-executor", stop));
        }

        if (json)
        {
            stdout.WriteLine(JsonSerializer.Serialize(findings, DoctorJsonContext.Default.ListDoctorFinding));
        }
        else
        {
            foreach (var finding in findings)
            {
                stdout.WriteLine($"{Label(finding.Status)} {finding.Check,-28} {finding.Found}");
                if (finding.Fix is not null)
                    stdout.WriteLine($"{"",6}{"",-28} fix: {finding.Fix}");
            }
        }

        var failed = findings.Where(finding => finding.Status == DoctorStatus.Fail).ToList();
        var warned = findings.Count(finding => finding.Status == DoctorStatus.Warn);
        if (!json)
            stdout.WriteLine($"{findings.Count} checks: {findings.Count - failed.Count - warned} passed, {warned} warned, {failed.Count} failed.");
        var outcome = failed.Count == 0 ? null : new FindingsException($"doctor: {failed.Count} check(s) failed: {string.Join(", ", failed.Select(finding => finding.Check))}");
        var exitCode = outcome is null ? ExitCodes.Success : ExitCodes.FindingsExitCode;
        if (config is not null)
            VerbEvents.Record(config, environment, "doctor", new VerbFacts(), outcome, exitCode, clock.Elapsed);
        return exitCode;
    }

    private static string Label(DoctorStatus status) => status switch
    {
        DoctorStatus.Pass => "PASS ",
        DoctorStatus.Warn => "WARN ",
        _ => "FAIL ",
    };
}
