using System.Text.Json;
using System.Text.Json.Serialization;

namespace GpuExecutor.Simulation;

/// <summary>
/// A job for the runner simulator: the part of a .gitlab-ci.yml job that reaches a runner, as a
/// small JSON file. Everything but the script has a default.
/// </summary>
public sealed class SimulatedJob
{
    [JsonPropertyName("name")] public string Name { get; set; } = "train";
    [JsonPropertyName("stage")] public string Stage { get; set; } = "train";
    [JsonPropertyName("image")] public string? Image { get; set; }
    [JsonPropertyName("variables")] public Dictionary<string, string> Variables { get; set; } = [];

    /// <summary>Keys of <see cref="Variables"/> that are masked CI/CD variables, as GitLab marks them in the payload.</summary>
    [JsonPropertyName("masked")] public List<string> Masked { get; set; } = [];

    /// <summary>The main step (`script:` in .gitlab-ci.yml), run as stage build_script.</summary>
    [JsonPropertyName("script")] public List<string> Script { get; set; } = [];

    /// <summary>Further named steps, each run as stage step_&lt;name&gt; after the main one.</summary>
    [JsonPropertyName("steps")] public List<SimulatedStep> Steps { get; set; } = [];

    [JsonPropertyName("after_script")] public List<string> AfterScript { get; set; } = [];

    /// <summary>Job timeout in seconds; the runner's default is one hour.</summary>
    [JsonPropertyName("timeout")] public long Timeout { get; set; } = 3600;

    /// <summary>A directory (relative to the job file) that get_sources places in CI_PROJECT_DIR, standing in for git.</summary>
    [JsonPropertyName("sources")] public string? Sources { get; set; }

    [JsonPropertyName("job_id")] public long? JobId { get; set; }
    [JsonPropertyName("project_id")] public long ProjectId { get; set; } = 1;
    [JsonPropertyName("project_path")] public string ProjectPath { get; set; } = "ml/demo";
    [JsonPropertyName("pipeline_id")] public long PipelineId { get; set; } = 1;
    [JsonPropertyName("ref")] public string Ref { get; set; } = "main";

    public static SimulatedJob Load(string path)
    {
        var job = JsonSerializer.Deserialize(File.ReadAllBytes(path), SimulationJsonContext.Default.SimulatedJob)
            ?? throw new InvalidDataException($"job file '{path}' is JSON null.");
        if (job.Script.Count == 0 && job.Steps.Count == 0)
            throw new InvalidDataException($"job file '{path}' has no script and no steps.");
        return job;
    }
}

public sealed class SimulatedStep
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("script")] public List<string> Script { get; set; } = [];
}

/// <summary>What the simulator reports about one job, for people (the log) and tests (this file).</summary>
public sealed class SimulationResult
{
    [JsonPropertyName("job_id")] public long JobId { get; set; }

    /// <summary>success, failed, canceled, timeout or system_failure.</summary>
    [JsonPropertyName("outcome")] public string Outcome { get; set; } = "success";

    /// <summary>The job's exit code as GitLab would show it ("exit code 42"), when a script failed.</summary>
    [JsonPropertyName("exit_code")] public int? ExitCode { get; set; }

    [JsonPropertyName("message")] public string Message { get; set; } = "";
    [JsonPropertyName("prepare_attempts")] public int PrepareAttempts { get; set; }
    [JsonPropertyName("cleanup_calls")] public int CleanupCalls { get; set; }
    [JsonPropertyName("calls")] public List<SimulatedCall> Calls { get; set; } = [];
}

public sealed class SimulatedCall
{
    /// <summary>config, prepare, cleanup, or the stage name for run.</summary>
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("exit_code")] public int ExitCode { get; set; }

    /// <summary>Set on run calls: the integer in BUILD_EXIT_CODE_FILE, when the executor wrote one.</summary>
    [JsonPropertyName("build_exit_code")] public int? BuildExitCode { get; set; }

    [JsonPropertyName("signalled")] public string? Signalled { get; set; }
    [JsonPropertyName("seconds")] public double Seconds { get; set; }
}

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(SimulatedJob))]
[JsonSerializable(typeof(SimulationResult))]
[JsonSerializable(typeof(List<PipelineJobResult>))]
public sealed partial class SimulationJsonContext : JsonSerializerContext;
