using System.Text.Json;
using GpuExecutor.Composition;
using GpuExecutor.Configuration;
using GpuExecutor.Doctor;
using GpuExecutor.Outcomes;
using GpuExecutor.Protocol;

namespace GpuExecutor.Verbs;

/// <summary>
/// `doctor [--runner-config PATH] [--json]`: one line per check (<see cref="HostDoctor"/>). A
/// config that does not parse is itself the first failed check. Returns the config, when it
/// parsed, and the findings; the exit code is decided with the others, in ExitCodes.
/// </summary>
public static class DoctorVerb
{
    public static async Task<(ExecutorConfig? Config, IReadOnlyList<DoctorFinding> Findings)> RunAsync(string configPath, string? runnerConfigPath, bool json, TextWriter stdout, CancellationToken stop)
    {
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
            return (config, findings);
        }
        foreach (var finding in findings)
        {
            stdout.WriteLine($"{Label(finding.Status)} {finding.Check,-28} {finding.Found}");
            if (finding.Fix is not null)
                stdout.WriteLine($"{"",6}{"",-28} fix: {finding.Fix}");
        }
        var failed = findings.Count(finding => finding.Status == DoctorStatus.Fail);
        var warned = findings.Count(finding => finding.Status == DoctorStatus.Warn);
        stdout.WriteLine($"{findings.Count} checks: {findings.Count - failed - warned} passed, {warned} warned, {failed} failed.");
        return (config, findings);
    }

    private static string Label(DoctorStatus status) => status switch
    {
        DoctorStatus.Pass => "PASS ",
        DoctorStatus.Warn => "WARN ",
        _ => "FAIL ",
    };
}
