using System.Text.Json.Serialization;

namespace GpuExecutor.Protocol;

/// <summary>
/// The parts of the runner's job payload (response.json, common/spec/spec.go) that the executor
/// reads. Unknown fields are ignored; the simulator writes the same shape.
/// </summary>
public sealed class JobPayload
{
    [JsonPropertyName("id")] public long Id { get; set; }
    [JsonPropertyName("token")] public string? Token { get; set; }
    [JsonPropertyName("job_info")] public JobInfo JobInfo { get; set; } = new();
    [JsonPropertyName("git_info")] public GitInfo GitInfo { get; set; } = new();
    [JsonPropertyName("runner_info")] public RunnerInfo RunnerInfo { get; set; } = new();
    [JsonPropertyName("variables")] public List<JobVariable> Variables { get; set; } = [];

    /// <summary>The variables by name; a name given twice keeps its last value, as the runner does.</summary>
    public Dictionary<string, string> VariableMap()
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var variable in Variables)
            map[variable.Key] = variable.Value;
        return map;
    }
    [JsonPropertyName("steps")] public List<JobStep> Steps { get; set; } = [];
    [JsonPropertyName("image")] public JobImage? Image { get; set; }
}

public sealed class JobInfo
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("stage")] public string Stage { get; set; } = "";
    [JsonPropertyName("project_id")] public long ProjectId { get; set; }
    [JsonPropertyName("project_name")] public string ProjectName { get; set; } = "";
    [JsonPropertyName("project_full_path")] public string ProjectFullPath { get; set; } = "";
    [JsonPropertyName("pipeline_id")] public long PipelineId { get; set; }
}

public sealed class GitInfo
{
    [JsonPropertyName("repo_url")] public string RepoUrl { get; set; } = "";
    [JsonPropertyName("ref")] public string Ref { get; set; } = "";
    [JsonPropertyName("sha")] public string Sha { get; set; } = "";
    [JsonPropertyName("ref_type")] public string RefType { get; set; } = "branch";
}

public sealed class RunnerInfo
{
    [JsonPropertyName("timeout")] public long Timeout { get; set; }
}

public sealed class JobVariable
{
    [JsonPropertyName("key")] public string Key { get; set; } = "";
    [JsonPropertyName("value")] public string Value { get; set; } = "";
    [JsonPropertyName("public")] public bool Public { get; set; }
    [JsonPropertyName("masked")] public bool Masked { get; set; }
    [JsonPropertyName("file")] public bool File { get; set; }
    [JsonPropertyName("raw")] public bool Raw { get; set; }
}

public sealed class JobStep
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("script")] public List<string> Script { get; set; } = [];
    [JsonPropertyName("timeout")] public long Timeout { get; set; }
    [JsonPropertyName("when")] public string When { get; set; } = "on_success";
    [JsonPropertyName("allow_failure")] public bool AllowFailure { get; set; }
}

public sealed class JobImage
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("entrypoint")] public List<string>? Entrypoint { get; set; }
}

/// <summary>The runner's config-stage output (executors/custom/api config.go).</summary>
public sealed class ConfigOutput
{
    [JsonPropertyName("builds_dir")] public string BuildsDir { get; set; } = "";
    [JsonPropertyName("cache_dir")] public string CacheDir { get; set; } = "";
    [JsonPropertyName("builds_dir_is_shared")] public bool BuildsDirIsShared { get; set; }
    [JsonPropertyName("hostname")] public string Hostname { get; set; } = "";
    [JsonPropertyName("driver")] public DriverInfo Driver { get; set; } = new();
    [JsonPropertyName("shell")] public string Shell { get; set; } = "bash";
    [JsonPropertyName("job_env")] public Dictionary<string, string> JobEnv { get; set; } = [];
}

public sealed class DriverInfo
{
    [JsonPropertyName("name")] public string Name { get; set; } = "";
    [JsonPropertyName("version")] public string Version { get; set; } = "";
}

// Source-generated so NativeAOT needs no reflection over these types.
[JsonSourceGenerationOptions(WriteIndented = false, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(JobPayload))]
[JsonSerializable(typeof(ConfigOutput))]
public sealed partial class ProtocolJsonContext : JsonSerializerContext;
